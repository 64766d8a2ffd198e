"""Copy a GGUF file with metadata added: every key and tensor of the input unchanged, written through the gguf
package to a temporary file beside the output and renamed into place, so the output is whole or absent."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .ggufmeta import GGUFError


def check_output(src: Path, dst: Path) -> None:
    """ValueError unless `dst` can be written as a copy of `src`: never the input itself (through any spelling of
    the path or a link), and in an existing directory."""
    try:
        same = src.resolve() == dst.resolve() or (dst.exists() and os.path.samefile(src, dst))
    except OSError:
        same = False
    if same:
        raise ValueError(f"refusing to overwrite the input {src}; give another output path")
    if not dst.parent.is_dir():
        raise ValueError(f"output directory does not exist: {dst.parent}")


def write_with_metadata(src: Path, dst: Path, fields: list[tuple[str, Any, str]], replace_prefix: str,
                        progress: bool = True) -> None:
    """Write `src` plus `fields` ((key, value, GGUF value type name), arrays as "<TYPE>_ARRAY") to `dst`; keys of
    `src` that start with `replace_prefix` are dropped first (a second calibration replaces the first)."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter
    from tqdm import tqdm

    src, dst = Path(src), Path(dst)
    check_output(src, dst)
    reader = GGUFReader(str(src), "r")
    arch = reader.fields["general.architecture"].contents()
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.close(fd)
    writer = None
    try:
        writer = GGUFWriter(None, arch, endianess=reader.endianess)
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture" or key.startswith(replace_prefix):
                continue
            vtype = field.types[0]
            sub = field.types[1] if vtype == GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), vtype, sub_type=sub)
        if "general.alignment" in reader.fields:
            writer.data_alignment = int(reader.fields["general.alignment"].contents())
        for key, value, tname in fields:
            if tname.endswith("_ARRAY"):
                sub = GGUFValueType[tname[:-len("_ARRAY")]]
                writer.add_key_value(key, np.asarray(value).tolist(), GGUFValueType.ARRAY, sub_type=sub)
            else:
                writer.add_key_value(key, value, GGUFValueType[tname])
        for t in reader.tensors:
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        writer.write_header_to_file(path=Path(tmp))
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = sum(int(t.n_bytes) for t in reader.tensors)
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"writing {dst.name}", file=sys.stderr,
                  disable=not progress) as bar:
            for t in reader.tensors:
                writer.write_tensor_data(t.data)
                bar.update(int(t.n_bytes))
        writer.flush()
        os.fsync(writer.fout[0].fileno())
        writer.close()
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is read by others too
        os.replace(tmp, dst)
    except BaseException as e:  # Ctrl-C included: never leave the temporary file behind
        if writer is not None:
            writer.close()
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (ValueError, KeyError)) and not isinstance(e, GGUFError):
            raise GGUFError(f"could not copy {src.name}: {e}") from e
        raise
