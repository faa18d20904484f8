"""Writing files so that a cut-off write never looks finished: everything `aslfr` writes goes
through a temporary name beside its target and is renamed into place. The temporary name is
unique to the writing process and call, so two writers never share one."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def temporary_name(path: Path) -> Path:
    """A hidden name beside `path`, unique to this process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write(path: Path, write) -> None:  # noqa: ANN001 - write(tmp_path) callback
    """`write(tmp)` to a temporary name, then rename it to `path`; the temporary is removed if
    anything fails. A write that fails for want of room (a full disk, a file size limit; torch and
    numpy each say so in their own words) is an OSError naming `path`, not the temporary."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise WriteError(e.errno or errno.EIO, _why(e, path), str(path)) from None
    except RuntimeError as e:  # torch.save's zip writer: "file write failed", "unexpected pos ..."
        if not any(w in str(e) for w in ("PytorchStreamWriter", "inline_container", "write failed")):
            raise
        raise WriteError(errno.EIO, _why(e, path), str(path)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


class WriteError(OSError):
    """A file that could not be written; `filename` is the file, `strerror` why."""


def _why(e: BaseException, path: Path) -> str:
    """Why a write failed, with the room left where it was going."""
    code = e.errno if isinstance(e, OSError) else None
    reason = e.strerror if isinstance(e, OSError) and e.strerror else "the write failed"
    if code not in (None, errno.ENOSPC, errno.EFBIG, errno.EDQUOT):  # not a matter of room
        return reason
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return reason
    return f"{reason} ({free / 2**20:.0f} MB free on its disk)"


def check_output_file(path: Path, flag: str = "--out") -> Path:
    """Before any work: `path` can be written (its folder is created if need be), so that a bad
    output is found now, not after the work it was to hold."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; {flag} names the file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{path}: cannot create its folder {path.parent} ({e.strerror or e})") from None
    probe = temporary_name(path)
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{path}: cannot write in its folder {path.parent} ({e.strerror or e})") from None
    return path


def write_csv(path: Path, header: list[str], rows: Iterable[Sequence]) -> None:
    """A UTF-8 csv file with `header`."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    atomic_write(Path(path), write)


def write_table(path: Path, columns: dict[str, list | np.ndarray]) -> None:
    """A parquet table: numeric columns from numpy arrays, text columns from lists of strings
    (typed as strings even when empty, so that tables of files with no rows concatenate with the
    others)."""
    table = pa.table({k: (v if isinstance(v, np.ndarray) else pa.array(v, type=pa.string()))
                      for k, v in columns.items()})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append '.npz' to a name
            np.savez(f, **arrays)
    atomic_write(path, write)


def save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)
    atomic_write(path, write)


def write_json(path: Path, obj: object) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))
