"""The memory allocator training runs with.

glibc's malloc serves every block over 32 MB (its largest mmap threshold on 64-bit) with a fresh
`mmap` and gives it back with `munmap` when it is freed. A training step's activations at the
seed's shapes are 37 MB ([32, 380, 768] float32) to 150 MB ([128, 380, 768]) each, so under
glibc every step maps, page-faults, zeroes and unmaps tens of gigabytes: a seed-base step at
batch 128 took 16 million page faults and half the machine's CPU time in the kernel on the
2-core development machine (`benchmarks/train_command.py`). glibc cannot be told to keep such
blocks (turning its mmap off instead fragmented the heap past 20 GB at batch 128).

So the heavy commands (`train`, `score`, `pipeline`) start themselves again with an allocator
that keeps freed memory for reuse, when one is installed: tcmalloc (Debian/Ubuntu package
`libtcmalloc-minimal4`), else jemalloc (`libjemalloc2`, with its returning of memory to the
system turned off). Without either they run on glibc with PyTorch's transparent huge pages for
large tensors (`THP_MEM_ALLOC_ENABLE`), which cuts the page faults 60-fold but still zeroes the
pages. `ASLFR_ALLOCATOR=system` keeps plain glibc; `ASLFR_ALLOCATOR=tcmalloc|jemalloc` asks for
one (an error if it is not installed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: name -> the shared libraries that provide it, in order of preference
LIBRARIES = {"tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
             "jemalloc": ("libjemalloc.so.2",)}
#: each allocator's settings: jemalloc keeps freed pages (by default it returns them to the
#: system within seconds, and a step faults them in again: 81 s against 37 s a step at batch 128)
SETTINGS = {"jemalloc": {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}, "tcmalloc": {}}
_ACTIVE = "ASLFR_ALLOCATOR_ACTIVE"  # set in the restarted process: never restart twice


def _library_dirs() -> list[Path]:
    dirs = [Path(sys.prefix) / "lib"]
    if os.environ.get("CONDA_PREFIX"):
        dirs.append(Path(os.environ["CONDA_PREFIX"]) / "lib")
    multiarch = f"{os.uname().machine}-linux-gnu" if hasattr(os, "uname") else ""
    for root in ("/lib", "/usr/lib", "/usr/local/lib", "/lib64", "/usr/lib64"):
        dirs += [Path(root) / multiarch, Path(root)] if multiarch else [Path(root)]
    return dirs


def find_allocator(name: str | None = None) -> tuple[str, Path] | None:
    """The first installed allocator (or `name`), with its library's path."""
    for candidate, libraries in LIBRARIES.items():
        if name not in (None, candidate):
            continue
        for folder in _library_dirs():
            for library in libraries:
                if (folder / library).is_file():
                    return candidate, folder / library
    return None


def allocator_in_use() -> str:
    """What this process allocates with, in words (from the libraries mapped into it)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "the system's malloc"
    for name, libraries in LIBRARIES.items():
        if any(lib.split(".so")[0] in maps for lib in libraries):
            return name
    thp = " with transparent huge pages for large tensors" if os.environ.get("THP_MEM_ALLOC_ENABLE") == "1" else ""
    return f"glibc malloc{thp}"


def allocator_environment(choice: str | None = None) -> dict[str, str] | None:
    """The environment variables that start a process with `choice` (tcmalloc, jemalloc; None:
    the first installed one), or None when there is none to use."""
    choice = choice or os.environ.get("ASLFR_ALLOCATOR") or None
    if choice == "system":
        return None
    if choice is not None and choice not in LIBRARIES:
        raise ValueError(f"ASLFR_ALLOCATOR={choice}: expected tcmalloc, jemalloc or system")
    found = find_allocator(choice)
    if found is None:
        if choice is not None:
            raise ValueError(f"ASLFR_ALLOCATOR={choice}: not installed (Debian/Ubuntu: apt install "
                             f"{'libtcmalloc-minimal4' if choice == 'tcmalloc' else 'libjemalloc2'})")
        return None
    name, path = found
    preload = " ".join(p for p in (str(path), os.environ.get("LD_PRELOAD", "")) if p)
    return {"LD_PRELOAD": preload, _ACTIVE: name, **SETTINGS[name]}


def restart_with_allocator(command: list[str]) -> None:
    """Start this program again as `python COMMAND...` (same process id) with a caching allocator
    when one is installed and not yet in use; otherwise switch on PyTorch's huge pages for large
    tensors (before torch allocates anything) and return. Only Linux restarts."""
    if os.environ.get(_ACTIVE) or not sys.platform.startswith("linux") or allocator_in_use() in LIBRARIES:
        return  # restarted already, or started with one preloaded
    env = allocator_environment()
    if env is None:
        if os.environ.get("ASLFR_ALLOCATOR") != "system":
            os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *command], {**os.environ, **env})
