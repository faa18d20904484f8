"""The compiled loops (numba) of `aslfr prepare`: the gather of a file's columns into row-major
rows, and the per-sequence sums behind the normalisation statistics.

Both release the GIL, so callers split the rows over threads. They are compiled on first use
and cached on disk beside this file.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

N_SUMS = 9  # [count, sum, sum of squares] x [value, 1-row difference, 2-row difference]
_TILE = 256  # rows per tile of the gather: 256 rows x 200 columns of float32 stay in L2


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
def sums_kernel(values, starts, lengths, out, first, last):  # pragma: no cover - compiled
    """out[s, :, j] = for sequences s in first..last-1 (rows starts[s]..starts[s]+lengths[s]-1
    of `values`), column by column: the count, sum and sum of squares of the values that are not
    NaN, and of the differences x[t + k] - x[t] (k = 1, 2) where both ends are not NaN. Float64,
    in row order; the inner loops run along the row, over the columns, so they vectorise."""
    n_cols = values.shape[1]
    here = np.empty(n_cols, np.float32)
    seen = np.empty(n_cols, np.bool_)
    zero = np.float32(0.0)
    for s in range(first, last):
        a = starts[s]
        b = a + lengths[s]
        o = out[s]
        for t in range(a, b):
            for j in range(n_cols):
                x = values[t, j]
                ok = x == x
                v = x if ok else zero
                o[0, j] += np.float64(ok)
                o[1, j] += v
                o[2, j] += np.float64(v) * v
                here[j] = v
                seen[j] = ok
            for k in (1, 2):
                if t + k < b:
                    for j in range(n_cols):
                        y = values[t + k, j]
                        ok = seen[j] and y == y
                        d = (y - here[j]) if ok else zero
                        o[3 * k, j] += np.float64(ok)
                        o[3 * k + 1, j] += d
                        o[3 * k + 2, j] += np.float64(d) * d


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
