"""The compiled loops (numba) of `aslfr prepare`: the copy of a file's columns into sequence
blocks (or into row-major rows), and the per-sequence sums behind the normalisation statistics.

All release the GIL, so callers split the work over threads. They are compiled on first use
and cached on disk beside this file.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

N_SUMS = 9  # [count, sum, sum of squares] x [value, 1-row difference, 2-row difference]
_TILE = 256  # rows per tile of the row-major gather: 256 rows x 200 columns of float32 stay in L2
# Lets LLVM reorder the float64 sums so that they vectorise (one reduction alone is about 6x faster
# than in order; the whole kernel about 2x faster than the earlier row-wise loop). Not
# 'nnan' or 'ninf': the NaN tests must stay. The order is fixed by the compiled code, so a machine
# gives the same sums every run; CPUs with other vector widths may differ in the last bits.
_REORDERED_SUMS = {"reassoc", "contract", "nsz", "arcp"}


@numba.njit(nogil=True, cache=True)
def gather_kernel(columns, dst, row0, first, last):  # pragma: no cover - compiled
    """dst[row0 + t, j] = columns[j][t] for t in first..last-1, tile by tile, straight from the
    column buffers (numpy's strided copy into a row-major array is ~2x slower)."""
    n_cols = len(columns)
    for a in range(first, last, _TILE):
        b = min(a + _TILE, last)
        for j in range(n_cols):
            c = columns[j]
            for t in range(a, b):
                dst[row0 + t, j] = c[t]


@numba.njit(nogil=True, cache=True)
def blocks_kernel(columns, dst, row0, starts, lengths, first, last):  # pragma: no cover - compiled
    """Copy the rows row0..row0 + len(columns[0]) - 1, given as columns, into the sequence blocks
    of `dst` (see `aslfr.data.shards`: sequence s is dst[starts[s] * C:(starts[s] + lengths[s]) * C]
    as [C, lengths[s]]), for the sequences first..last-1: each column's run of a sequence is one
    contiguous copy."""
    n_cols = len(columns)
    end = row0 + len(columns[0])
    for s in range(first, last):
        a = max(starts[s], row0)
        b = min(starts[s] + lengths[s], end)
        if a >= b:
            continue
        n = lengths[s]
        base = starts[s] * n_cols + (a - starts[s])
        for j in range(n_cols):
            o = base + j * n
            dst[o:o + (b - a)] = columns[j][a - row0:b - row0]


@numba.njit(nogil=True, cache=True, fastmath=_REORDERED_SUMS)
def sums_kernel(blocks, starts, lengths, n_cols, out, first, last):  # pragma: no cover - compiled
    """out[s, :, j] = for the sequences s in first..last-1 (sequence blocks, see `blocks_kernel`),
    column by column: the count, sum and sum of squares of the values that are not NaN, and of
    the differences x[t + k] - x[t] (k = 1, 2) where both ends are not NaN. The differences are
    taken in float32, like the feature code's; the sums are float64. Each column's run is
    contiguous, so the loops vectorise."""
    for s in range(first, last):
        n = lengths[s]
        base = starts[s] * n_cols
        o = out[s]
        for j in range(n_cols):
            x = blocks[base + j * n:base + (j + 1) * n]
            count = 0.0
            total = 0.0
            total_sq = 0.0
            for t in range(n):
                v = x[t]
                ok = v == v
                w = np.float64(v) if ok else 0.0
                count += 1.0 if ok else 0.0
                total += w
                total_sq += w * w
            o[0, j] = count
            o[1, j] = total
            o[2, j] = total_sq
            for k in (1, 2):
                count = 0.0
                total = 0.0
                total_sq = 0.0
                for t in range(n - k):
                    u = x[t]
                    v = x[t + k]
                    ok = (u == u) & (v == v)
                    w = np.float64(v - u) if ok else 0.0
                    count += 1.0 if ok else 0.0
                    total += w
                    total_sq += w * w
                o[3 * k, j] = count
                o[3 * k + 1, j] = total
                o[3 * k + 2, j] = total_sq


def in_parts(fn, sizes: np.ndarray, threads: int) -> None:  # noqa: ANN001 - fn(first, last)
    """Call fn(first, last) over consecutive items split into `threads` parts of about equal
    total size, each part on its own thread (the kernels release the GIL)."""
    n = len(sizes)
    if n == 0:
        return
    if threads <= 1 or n < 2:
        fn(0, n)
        return
    total = np.cumsum(sizes)
    cuts = np.searchsorted(total, total[-1] * np.arange(1, threads) / threads)
    bounds = [0, *sorted({int(c) for c in cuts if 0 < c < n}), n]
    with ThreadPoolExecutor(len(bounds) - 1) as pool:
        for f in [pool.submit(fn, a, b) for a, b in zip(bounds[:-1], bounds[1:])]:
            f.result()


def gather(columns: list[np.ndarray], dst: np.ndarray, row0: int, threads: int = 1) -> None:
    """dst[row0:row0 + n] = the 1-d float32 arrays `columns` side by side, as [n, len(columns)]."""
    typed = numba.typed.List(columns)
    in_parts(lambda a, b: gather_kernel(typed, dst, row0, a, b), np.ones(len(columns[0])), threads)


def copy_blocks(columns: list[np.ndarray], dst: np.ndarray, row0: int, starts: np.ndarray,
                lengths: np.ndarray, threads: int = 1) -> None:
    """Rows row0..row0 + n - 1 of a file, the 1-d float32 arrays `columns`, into the sequence
    blocks of `dst` (sequences given by their ascending, contiguous `starts` and `lengths`);
    a sequence cut by the piece's ends gets the part it has here."""
    end = row0 + len(columns[0])
    first = int(np.searchsorted(starts + lengths, row0, side="right"))
    last = int(np.searchsorted(starts, end, side="left"))
    here = np.minimum(starts[first:last] + lengths[first:last], end) - np.maximum(starts[first:last], row0)
    typed = numba.typed.List(columns)
    in_parts(lambda a, b: blocks_kernel(typed, dst, row0, starts, lengths, first + a, first + b), here, threads)
