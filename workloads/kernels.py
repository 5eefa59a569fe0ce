"""The pixel kernel — contrast stretch, gamma, 3×3 box blur — in four implementations.

All four give bit-identical uint8 output: contrast and gamma go through one shared 256-entry
lookup table (as Pillow's ``point`` does), and the blur adds the nine neighbours in the same
order in float64, rounding half up. That lets the benchmark compare speed, never results.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np

GAMMA = 0.8


def lookup_table(lo: int, hi: int, gamma: float = GAMMA) -> np.ndarray:
    """float64[256]: stretch ``lo..hi`` to 0..1, apply ``gamma``, scale to 0..255."""
    span = max(hi - lo, 1)
    v = np.clip((np.arange(256, dtype=np.float64) - lo) / span, 0.0, 1.0)
    return 255.0 * v**gamma


def kernel_python(image: np.ndarray) -> np.ndarray:
    """Pure-Python loops over lists: the baseline the JIT is measured against."""
    rows = image.tolist()
    h, w = len(rows), len(rows[0])
    lut = lookup_table(min(map(min, rows)), max(map(max, rows))).tolist()
    vals = [[lut[p] for p in row] for row in rows]
    out = [[0] * w for _ in range(h)]
    for i in range(h):
        for j in range(w):
            acc = 0.0
            for di in (-1, 0, 1):
                ii = min(max(i + di, 0), h - 1)
                row = vals[ii]
                for dj in (-1, 0, 1):
                    acc += row[min(max(j + dj, 0), w - 1)]
            out[i][j] = math.floor(acc / 9.0 + 0.5)
    return np.array(out, dtype=np.uint8)


def kernel_numpy(image: np.ndarray) -> np.ndarray:
    """Vectorised NumPy: nine shifted views of an edge-padded copy."""
    vals = lookup_table(int(image.min()), int(image.max()))[image]
    padded = np.pad(vals, 1, mode="edge")
    h, w = image.shape
    acc = np.zeros((h, w))
    for di in range(3):
        for dj in range(3):
            acc += padded[di : di + h, dj : dj + w]
    return np.floor(acc / 9.0 + 0.5).astype(np.uint8)


def _blur_body(vals: np.ndarray, out: np.ndarray, i: int) -> None:
    h, w = vals.shape
    for j in range(w):
        acc = 0.0
        for di in range(-1, 2):
            ii = min(max(i + di, 0), h - 1)
            for dj in range(-1, 2):
                acc += vals[ii, min(max(j + dj, 0), w - 1)]
        out[i, j] = np.uint8(math.floor(acc / 9.0 + 0.5))


# cache=True: compiled code is written beside this module and loaded by every worker process
# instead of each one spending the compile time again (numba keys it by this file's path and
# stamp, and pickles the module's name: a cache written when this module was
# `workloads.kernels` is stale now that it is `smallbig.workloads.kernels`, and this file's
# new stamp makes numba compile afresh). nogil=True: a thread pool can run kernels side by
# side, as it does NumPy's.
_blur_row = numba.njit(cache=True, nogil=True)(_blur_body)


@numba.njit(cache=True, nogil=True)
def blur_serial(vals: np.ndarray) -> np.ndarray:
    """The numba blur, one row after another (the parallel kernel's serial twin)."""
    out = np.empty(vals.shape, np.uint8)
    for i in range(vals.shape[0]):
        _blur_row(vals, out, i)
    return out


@numba.njit(cache=True, parallel=True)
def _blur_parallel(vals: np.ndarray) -> np.ndarray:
    out = np.empty(vals.shape, np.uint8)
    for i in numba.prange(vals.shape[0]):
        _blur_row(vals, out, i)
    return out


def kernel_numba(image: np.ndarray) -> np.ndarray:
    """numba ``@njit`` loops (compiled on first call, then cached on disk)."""
    vals = lookup_table(int(image.min()), int(image.max()))[image]
    return blur_serial(vals)


def kernel_numba_parallel(image: np.ndarray) -> np.ndarray:
    """numba ``parallel=True``: rows spread over numba's threads.

    Inside pool or cluster workers, the backends cap numba's threads (``NUMBA_NUM_THREADS``) so
    that workers × threads does not oversubscribe the cores.
    """
    vals = lookup_table(int(image.min()), int(image.max()))[image]
    return _blur_parallel(vals)


KERNELS = {
    "python": kernel_python,
    "numpy": kernel_numpy,
    "numba": kernel_numba,
    "numba_parallel": kernel_numba_parallel,
}


def numba_threads() -> int:
    """Threads numba's parallel kernels use in this process."""
    return int(os.environ.get("NUMBA_NUM_THREADS", numba.config.NUMBA_NUM_THREADS))
