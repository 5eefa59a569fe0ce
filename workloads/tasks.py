"""Task kinds a user brings, for ``smallbig bench tasks``: each a plain top-level function of
one item, with its items, at a size a data scientist would meet.

None of them is special-cased anywhere: the benchmark profiles each with
:func:`compare.profile_task`, as it would a user's function, and checks the advice against
every backend measured.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


def python_cpu(seed: int) -> int:
    """Pure-Python CPU, holding the GIL: ~10 ms of integer arithmetic on lists."""
    values = list(range(seed % 7, 40_000 + seed % 7))
    return sum(v * v % 7 for v in values)


def linalg(seed: int) -> float:
    """NumPy/BLAS: a QR decomposition and a matrix product on 160×160 (multi-threaded BLAS)."""
    a = np.random.default_rng(seed).standard_normal((160, 160))
    q, r = np.linalg.qr(a)
    return float(np.abs(q @ r @ a.T).sum())


def numba_parallel(seed: int) -> float:
    """A numba ``parallel=True`` kernel: the 3×3 blur on a 1000×1000 image, rows over
    numba's threads."""
    from workloads.kernels import kernel_numba_parallel

    image = np.random.default_rng(seed).integers(0, 256, (1000, 1000), dtype=np.uint8)
    return float(kernel_numba_parallel(image).mean())


def decode_image(path: str) -> list[int]:
    """Pillow: decode an image file, convert to grayscale, resize to 256×256 (GIL released)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("L").resize((256, 256))
    return [small.width, small.height, int(np.asarray(small).sum())]


def io_wait(seed: int) -> int:
    """Waiting on I/O: 10 ms of a blocking call that releases the GIL, little CPU."""
    time.sleep(0.01)
    return seed


def tiny(seed: int) -> int:
    """Tens of microseconds: a small JSON round trip, where per-task overhead is everything."""
    record = {"id": seed, "name": f"item-{seed}", "values": list(range(10))}
    return len(json.loads(json.dumps(record))["values"]) + seed


def big_argument(array: np.ndarray) -> float:
    """A 1 MB argument and ~1 ms of NumPy on it: shipping the argument is most of the cost."""
    return float(np.sort(array)[:: array.size // 16].sum())


def mixed(seed: int) -> float:
    """A bit of everything: a 3 ms wait, 2 ms of Python, a small matrix product."""
    time.sleep(0.003)
    total = sum(i * i for i in range(8_000 + seed % 5))
    a = np.random.default_rng(seed).standard_normal((120, 120))
    return float((a @ a).trace()) + total % 3


def _seeds(n: int) -> list[int]:
    return list(range(n))


def _arrays(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random(2**20 // 8) for _ in range(n)]


def _image_paths(n: int) -> list[str]:
    from workloads.images import default_dataset_dir, image_files, make_images

    folder = default_dataset_dir()
    make_images(folder, 48)
    files = [str(p) for p in image_files(folder)]
    return [files[i % len(files)] for i in range(n)]


@dataclass(frozen=True)
class TaskKind:
    """A task of the suite: its function, how to make ``n`` items, and how many to run."""

    name: str
    fn: Callable[[Any], Any]
    make_items: Callable[[int], list]
    items: int


SUITE = (
    TaskKind("python_cpu", python_cpu, _seeds, 200),
    TaskKind("linalg", linalg, _seeds, 300),
    TaskKind("numba_parallel", numba_parallel, _seeds, 100),
    TaskKind("decode_image", decode_image, _image_paths, 96),
    TaskKind("io_wait", io_wait, _seeds, 200),
    TaskKind("tiny", tiny, _seeds, 20_000),
    TaskKind("big_argument", big_argument, _arrays, 200),
    TaskKind("mixed", mixed, _seeds, 200),
)
