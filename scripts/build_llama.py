#!/usr/bin/env python3
"""Build and install the patched llama.cpp / llama-cpp-python into a virtual environment.

Stdlib only (it runs before anything is installed). Steps: fetch the pinned llama-cpp-python sdist from PyPI and check
its sha256; extract it and apply patches/; build a wheel of it with its own build backend (scikit-build-core), which
compiles llama.cpp with native/ in a persistent build tree and, in that same configured tree, the llama.cpp tools
(llama-cli, llama-server, llama-perplexity, llama-bench, ggml-rpc-server, test-backend-ops); install the wheel into the venv and link the
tools into its bin/. Wheels are cached by a key of the sdist hash, the patches, native/ and the build flavour, so a
second run with nothing changed builds nothing.

    python3 scripts/build_llama.py --python .venv/bin/python [--cuda]

Offline (the GPU machine has no network): --source DIR uses a tree already extracted and patched
(scripts/gpu_bundle.py packs one) and --offline installs without an index.

--stock builds the *unpatched* pinned libllama and ggml-rpc-server (CPU) into their own build dir and prints that
dir; the tests load calibrated files with it (LLAMA_CPP_LIB_PATH) to check they still work in stock llama.cpp, and
offer the stock rpc-server an OScaR cache to see it refused.

--avx2 builds the patched libllama with ggml's x86 SIMD fixed at AVX2/FMA/F16C/BMI2 (GGML_NATIVE off) into its own
build dir and prints that dir: the code path of an x86 CPU without AVX-512 (an AMD EPYC before Zen 4), measured on
any x86 machine by pointing LLAMA_CPP_LIB_PATH at it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDIST_NAME = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
SDIST_FILE = f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# built in the wheel's tree: the libraries the wheel ships and the tools linked into the venv (TOOLS)
TOOLS = ["llama-cli", "llama-server", "llama-perplexity", "llama-bench", "ggml-rpc-server", "test-backend-ops"]
TARGETS = ["llama", "ggml", "mtmd", *TOOLS]
CUDA_ARCHS_DEFAULT = "86;89;90"  # consumer Ampere/Ada and Hopper
# flash-attention vec-kernel K-V pairs compiled for CUDA: upstream's defaults plus the OScaR pairs
CUDA_FA_QUANTS = "q4_0-q4_0;q8_0-q8_0;bf16-bf16;oscar2-oscar2;oscar3-oscar3;oscar4-oscar4;oscar3-oscar2;q8_0-oscar2;q8_0-oscar3"


class BuildError(Exception):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("OSCAR_GGUF_CACHE", Path.home() / ".cache" / "oscar-gguf"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.relative_to(ROOT).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def patch_files() -> list[Path]:
    return sorted((ROOT / "patches").glob("*.patch"))


def native_files() -> list[Path]:
    return sorted(p for p in (ROOT / "native").rglob("*") if p.suffix in (".c", ".h", ".cuh", ".cu", ".cpp", ".cmake"))


def fetch_sdist(python: str) -> Path:
    """Download the pinned sdist into the cache (once) and verify its hash."""
    dest = cache_dir() / "downloads"
    path = dest / SDIST_FILE
    if not path.exists():
        tmp = dest / "tmp-sdist"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        print(f"[oscar-gguf] downloading {SDIST_NAME}=={SDIST_VERSION} (sdist) from PyPI", flush=True)
        subprocess.run([python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                        "-d", str(tmp), f"{SDIST_NAME}=={SDIST_VERSION}"], check=True)
        os.replace(tmp / SDIST_FILE, path)
        shutil.rmtree(tmp, ignore_errors=True)
    check_sdist(path)
    return path


def check_sdist(path: Path) -> None:
    digest = sha256_file(path)
    if digest != SDIST_SHA256:
        bad = path.with_name(path.name + ".bad")
        os.replace(path, bad)
        raise BuildError(f"sdist {path.name} has sha256 {digest}, expected {SDIST_SHA256}; "
                         f"moved it to {bad} (delete it and run again)")


def extract_sdist(sdist: Path, src: Path, key: str, patches: list[Path], what: str = "") -> Path:
    """Extract the sdist into src (replaced whole, through a temp dir) with `patches` applied, stamped with key."""
    tmp = src.with_name(src.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"[oscar-gguf] extracting {sdist.name}{what}", flush=True)
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp, filter="data")
    top = tmp / f"llama_cpp_python-{SDIST_VERSION}"
    for p in patches:
        r = subprocess.run(["git", "apply", "--whitespace=nowarn", str(p)], cwd=top, capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError(f"patch {p.name} does not apply to {SDIST_FILE}: {r.stderr.strip()}")
    (top / ".oscar-source-key").write_text(key)
    shutil.rmtree(src, ignore_errors=True)
    os.replace(top, src)
    shutil.rmtree(tmp, ignore_errors=True)
    return src


def prepare_source(sdist: Path, key: str) -> Path:
    """Extract the sdist and apply patches/ into a fixed source dir (fixed so build trees stay valid)."""
    src = cache_dir() / "src" / "llama-cpp-python"
    stamp = src / ".oscar-source-key"
    if stamp.exists() and stamp.read_text() == key:
        return src
    return extract_sdist(sdist, src, key, patch_files())


def source_tree(src: Path, key: str) -> Path:
    """A tree prepared elsewhere: it must carry the key of this sdist and these patches."""
    have = (src / ".oscar-source-key").read_text() if (src / ".oscar-source-key").exists() else None
    if have != key:
        raise BuildError(f"{src} was not prepared from {SDIST_FILE} with these patches/ "
                         f"(source key {have and have[:12]}, expected {key[:12]}); make it again")
    return src.resolve()


def stock_build(python: str, jobs: int) -> Path:
    """The unpatched pinned llama.cpp: sdist extracted as is into src/stock, libllama, its ggml libraries and
    ggml-rpc-server (nothing else: CI pays for this build) into build/stock/bin. Returns the bin dir; a second call is a no-op."""
    src, build = cache_dir() / "src" / "stock", cache_dir() / "build" / "stock"
    stamp, bin_dir = build / ".oscar-stock-key", build / "bin"
    key = SDIST_SHA256 + " ".join(cpu_flags()) + " rpc"
    if stamp.exists() and stamp.read_text() == key and (bin_dir / "libllama.so").exists():
        return bin_dir
    sdist = fetch_sdist(python)
    if not (src / ".oscar-source-key").exists() or (src / ".oscar-source-key").read_text() != SDIST_SHA256:
        extract_sdist(sdist, src, SDIST_SHA256, [], " (stock, unpatched)")
    build.mkdir(parents=True, exist_ok=True)
    args = ["cmake", "-S", str(src / "vendor" / "llama.cpp"), "-B", str(build), "-G", "Ninja",
            *cmake_args(False, tools=False), "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DGGML_RPC=ON",
            "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF",
            "-DLLAMA_BUILD_COMMON=ON", "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", "-DCMAKE_INSTALL_RPATH=$ORIGIN"]
    log = build / "oscar-build.log"
    print(f"[oscar-gguf] building stock libllama (CPU) in {build}; log: {log}", flush=True)
    with open(log, "w") as f:
        logged_run(args, f)
        logged_run(["cmake", "--build", str(build), "-j", str(jobs), "--target", "llama", "ggml-rpc-server"], f,
                   progress=True)
    stamp.write_text(key)
    return bin_dir


AVX2_ISA = ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
            "-DGGML_BMI2=ON", "-DGGML_AVX512=OFF"]


def source_key() -> str:
    """The key of the patched source tree: the sdist and patches/."""
    return hashlib.sha256((SDIST_SHA256 + tree_hash(patch_files())).encode()).hexdigest()


def avx2_build(python: str, jobs: int) -> Path:
    """The patched libllama and its ggml libraries built for AVX2 without AVX-512 (AVX2_ISA), from the same patched
    source as the wheel, into build/avx2/bin. Returns the bin dir; a second call with nothing changed is a no-op."""
    build = cache_dir() / "build" / "avx2"
    stamp, bin_dir = build / ".oscar-build-key", build / "bin"
    key = source_key() + tree_hash(native_files()) + " ".join(AVX2_ISA + cpu_flags())
    if stamp.exists() and stamp.read_text() == key and (bin_dir / "libllama.so").exists():
        return bin_dir
    src = prepare_source(fetch_sdist(python), source_key())
    shutil.rmtree(build, ignore_errors=True)  # a tree configured from another source dir cannot be reused
    build.mkdir(parents=True)
    args = ["cmake", "-S", str(src / "vendor" / "llama.cpp"), "-B", str(build), "-G", "Ninja",
            *cmake_args(False, tools=False), f"-DOSCAR_NATIVE_DIR={ROOT / 'native'}", *AVX2_ISA,
            "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAVA_BUILD=OFF",
            "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", "-DCMAKE_INSTALL_RPATH=$ORIGIN"]
    log = build / "oscar-build.log"
    print(f"[oscar-gguf] building patched libllama for AVX2 (no AVX-512) in {build}; log: {log}", flush=True)
    with open(log, "w") as f:
        logged_run(args, f)
        logged_run(["cmake", "--build", str(build), "-j", str(jobs), "--target", "llama"], f, progress=True)
    stamp.write_text(key)
    return bin_dir


def stock_python_path() -> Path:
    """The stock llama-cpp-python package's parent dir (import it with this on PYTHONPATH)."""
    return cache_dir() / "src" / "stock"


def cpu_flags() -> list[str]:
    """Compiler flags of every build. x86: no AMX code, whose matrix multiply crashes on AMX machines (seen on a
    2-core Sapphire Rapids VM: SIGSEGV in ggml_backend_amx_mul_mat on the first 512-token batch; upstream
    ggml-org/llama.cpp#20824, open); compilers that do not know the flag get nothing."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    cc = os.environ.get("CC", "cc")
    r = subprocess.run([cc, "-mno-amx-int8", "-x", "c", "-E", "-"], input="", capture_output=True, text=True)
    return ["-mno-amx-int8"] if r.returncode == 0 else []


def cmake_args(cuda: bool, tools: bool) -> list[str]:
    flags = " ".join(cpu_flags())
    args = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}"]
    if tools:  # LLAVA_BUILD off: with the tools on, llama.cpp adds tools/mtmd itself
        args += [f"-DOSCAR_NATIVE_DIR={ROOT / 'native'}", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON",
                 "-DLLAMA_BUILD_TESTS=ON", "-DLLAMA_TESTS_INSTALL=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                 "-DLLAMA_BUILD_APP=OFF", "-DLLAVA_BUILD=OFF", "-DGGML_RPC=ON"]
    if cuda:
        archs = os.environ.get("OSCAR_CUDA_ARCHS", CUDA_ARCHS_DEFAULT)
        args += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={archs}", f"-DGGML_CUDA_FA_QUANTS={CUDA_FA_QUANTS}"]
    return args + os.environ.get("OSCAR_CMAKE_ARGS", "").split()


def tree_has(build: Path, key: str) -> bool:
    """Whether the build tree holds build `key` and all its tools (the tools linked into the venv come from it, so
    it must be this build's, not another checkout's)."""
    built = build / ".oscar-build-key"
    return built.exists() and built.read_text() == key and all((build / "bin" / t).exists() for t in TOOLS)


def build_wheel(python: str, src: Path, cuda: bool, jobs: int, stamp: dict, offline: bool) -> Path:
    """pip wheel of the patched tree (its scikit-build-core backend, no build isolation) in a persistent build tree,
    which also builds the tools. The stamp goes into the package first, so the wheel carries it."""
    out = cache_dir() / "wheels" / stamp["build_key"][:16]
    found = sorted(out.glob("llama_cpp_python-*.whl"))
    build = Path(stamp["build_dir"])
    if found and tree_has(build, stamp["build_key"]):
        return found[0]
    build.mkdir(parents=True, exist_ok=True)
    (build / ".oscar-build-key").unlink(missing_ok=True)
    (src / "llama_cpp" / "oscar-build.json").write_text(json.dumps(stamp, indent=2))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    env = dict(os.environ, CMAKE_ARGS=" ".join(cmake_args(cuda, tools=True)), CMAKE_GENERATOR="Ninja",
               CMAKE_BUILD_PARALLEL_LEVEL=str(jobs))
    cmd = [python, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", str(tmp),
           "-C", f"build-dir={build}", "-C", f"build.targets={';'.join(TARGETS)}", "-C", "cmake.build-type=Release",
           "-C", "build.verbose=true", *(["--no-index"] if offline else []), str(src)]
    log = build / "oscar-build.log"
    print(f"[oscar-gguf] building the llama-cpp-python wheel and {', '.join(TOOLS)} ({'CUDA' if cuda else 'CPU'}) "
          f"in {build} with {jobs} jobs (about 15 minutes on 2 cores); log: {log}", flush=True)
    with open(log, "w") as f:
        logged_run(cmd, f, progress=True, env=env)
    wheel = next(tmp.glob("llama_cpp_python-*.whl"))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    (build / ".oscar-build-key").write_text(stamp["build_key"])
    return out / wheel.name


def logged_run(cmd: list[str], log, progress: bool = False, env: dict | None = None) -> None:
    """Run cmd with its output going to log; show ninja's [n/N] counter; on failure show the log's tail."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            env=env)
    tail: list[str] = []
    for line in proc.stdout:
        log.write(line)
        tail = (tail + [line])[-40:]
        m = re.match(r"\[(\d+)/(\d+)\]", line)
        if progress and m and sys.stdout.isatty():
            print(f"\r[oscar-gguf] compiling {m[1]}/{m[2]}", end="", flush=True)
        elif progress and m and int(m[1]) % 25 == 0:
            print(f"[oscar-gguf] compiling {m[1]}/{m[2]}", flush=True)
    if progress and sys.stdout.isatty():
        print(flush=True)
    if proc.wait() != 0:
        sys.stderr.write("".join(tail))
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def site_llama_cpp(python: str) -> Path | None:
    r = subprocess.run([python, "-c", "import importlib.util as u; s = u.find_spec('llama_cpp'); "
                        "print(s.submodule_search_locations[0] if s else '')"], capture_output=True, text=True)
    return Path(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip() else None


def install(python: str, wheel: Path, build: Path, offline: bool) -> None:
    """pip-install the wheel (with llama-cpp-python's server extras) and link the tools into the venv's bin/."""
    print(f"[oscar-gguf] installing {wheel.name}", flush=True)
    extra = ["--no-index", "--find-links", str(wheel.parent)] if offline else []
    subprocess.run([python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", *extra, str(wheel)],
                   check=True)
    if not offline:  # its dependencies and the server's (the GPU machine's image has what the checks there need)
        subprocess.run([python, "-m", "pip", "install", "-q", f"{wheel}[server]"], check=True)
    bin_dir = Path(python).parent
    for tool in TOOLS:
        link = bin_dir / tool
        link.unlink(missing_ok=True)
        link.symlink_to(build / "bin" / tool)


def installed_stamp(python: str) -> dict | None:
    pkg = site_llama_cpp(python)
    try:
        return json.loads((pkg / "oscar-build.json").read_text()) if pkg else None
    except (OSError, ValueError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="interpreter of the target virtual environment")
    ap.add_argument("--cuda", action="store_true", default=os.environ.get("OSCAR_CUDA", "0") == "1",
                    help="build the CUDA backend too (or set OSCAR_CUDA=1)")
    ap.add_argument("--source", type=Path, help="an extracted, patched llama-cpp-python tree (skips the download)")
    ap.add_argument("--offline", action="store_true", help="install without a package index or build isolation")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", os.cpu_count() or 2)))
    ap.add_argument("--stock", action="store_true", help="build the unpatched libllama (CPU) and print its dir")
    ap.add_argument("--avx2", action="store_true", help="build the patched libllama for AVX2 only and print its dir")
    a = ap.parse_args()
    if a.stock or a.avx2:
        try:
            print(stock_build(a.python, a.jobs) if a.stock else avx2_build(a.python, a.jobs))
        except (BuildError, subprocess.CalledProcessError) as e:
            print(f"[oscar-gguf] error: {'stock' if a.stock else 'AVX2'} build failed: {e}", file=sys.stderr)
            return 1
        return 0
    patches, native = patch_files(), native_files()
    skey = source_key()
    build_key = hashlib.sha256((skey + tree_hash(native) + ("cuda" if a.cuda else "cpu")
                                + " ".join(cmake_args(a.cuda, tools=True))
                                + (os.environ.get("OSCAR_CUDA_ARCHS", CUDA_ARCHS_DEFAULT) if a.cuda else "")).encode()).hexdigest()
    old = installed_stamp(a.python)
    build_dir = cache_dir() / "build" / ("wheel-cuda" if a.cuda else "wheel-cpu")
    if old and old.get("build_key") == build_key and tree_has(build_dir, build_key):
        print(f"[oscar-gguf] patched llama.cpp is up to date (build {build_key[:12]})", flush=True)
        return 0
    try:
        src = source_tree(a.source, skey) if a.source else prepare_source(fetch_sdist(a.python), skey)
        commit = subprocess.run(["git", "-C", str(src / "vendor" / "llama.cpp"), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "unknown"
        stamp = {"build_key": build_key, "patch_set": tree_hash(patches)[:16], "native": tree_hash(native)[:16],
                 "llama_cpp_commit": commit, "sdist": f"{SDIST_NAME}=={SDIST_VERSION}", "cuda": a.cuda,
                 "build_dir": str(build_dir)}
        wheel = build_wheel(a.python, src, a.cuda, a.jobs, stamp, a.offline)
        install(a.python, wheel, build_dir, a.offline)
    except BuildError as e:
        print(f"[oscar-gguf] error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"[oscar-gguf] error: command failed ({e.returncode}): {' '.join(map(str, e.cmd))}", file=sys.stderr)
        return 1
    print(f"[oscar-gguf] installed patched llama.cpp {commit}, patch set {stamp['patch_set']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
