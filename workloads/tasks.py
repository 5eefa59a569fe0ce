"""Task kinds a user brings, for ``smallbig bench tasks``: each a plain top-level function of
one item, with its items, at a size a data scientist would meet.

None of them is special-cased anywhere: the benchmark profiles each with
:func:`smallbig.profile_task`, as it would a user's function, and checks the advice against
every backend measured.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


def python_cpu(seed: int) -> int:
    """Pure-Python CPU, holding the GIL: ~10 ms of integer arithmetic on lists."""
    values = list(range(seed % 7, 40_000 + seed % 7))
    return sum(v * v % 7 for v in values)


def python_long(seed: int) -> int:
    """Pure-Python CPU, holding the GIL: :func:`python_cpu` 30 times (~50 ms here), an item
    long enough that a scale model's nodes are held to their quota through it."""
    return sum(python_cpu(seed + k) for k in range(30))


def numba_blur(seed: int) -> float:
    """The numba 3×3 blur (one thread) on a 1000×1000 image made from ``seed``."""
    from smallbig.workloads.kernels import kernel_numba

    image = np.random.default_rng(seed).integers(0, 256, (1000, 1000), dtype=np.uint8)
    return float(kernel_numba(image).mean())


def linalg(seed: int) -> float:
    """NumPy/BLAS: a QR decomposition and a matrix product on 160×160 (multi-threaded BLAS)."""
    a = np.random.default_rng(seed).standard_normal((160, 160))
    q, r = np.linalg.qr(a)
    return float(np.abs(q @ r @ a.T).sum())


def numba_parallel(seed: int) -> float:
    """A numba ``parallel=True`` kernel: the 3×3 blur on a 1000×1000 image, rows over
    numba's threads."""
    from smallbig.workloads.kernels import kernel_numba_parallel

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


def skewed(seed: int) -> int:
    """Pure Python whose items vary 100× in duration (~0.1 to 10 ms, even in log scale): a
    few long items decide when a batch ends."""
    steps = int(2_000 * 100 ** ((seed * 0.6180339887) % 1.0))
    return sum(i % 7 for i in range(steps))


def large_result(seed: int) -> np.ndarray:
    """A 2 MiB array back from ~1 ms of NumPy: shipping the result is most of the cost."""
    return np.random.default_rng(seed).random(2**18)


EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def regex_text(text: str) -> int:
    """Text processing in pure Python: the e-mail addresses in a ~50 kB document."""
    return len({m.lower() for m in EMAIL.findall(text)})


def pandas_small(frame: Any) -> float:
    """pandas on a small DataFrame per item (500 rows): a group-by and a join back."""
    means = frame.groupby("key")["value"].mean().rename("mean")
    joined = frame.join(means, on="key")
    return float((joined["value"] - joined["mean"]).abs().sum())


async def weather_coroutine(item: Any) -> dict:
    """A coroutine that asks the weather API (an HTTP request, 20 ms of latency)."""
    from smallbig.workloads.api import fetch_summary_async

    return await fetch_summary_async(item)


def _seeds(n: int) -> list[int]:
    return list(range(n))


def megabyte_arrays(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random(2**20 // 8) for _ in range(n)]


def _texts(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    words = ["data", "cluster", "python", "pool", "thread", "item", "batch", "result"]
    out = []
    for i in range(n):
        tokens = rng.choice(words, 7_000).tolist()
        for j in range(0, len(tokens), 97):  # an address every ~100 words
            tokens[j] = f"user{(i * 31 + j) % 500}@example{j % 7}.org"
        out.append(" ".join(tokens))
    return out


def _frames(n: int) -> list[Any]:
    import pandas as pd

    rng = np.random.default_rng(0)
    return [
        pd.DataFrame({"key": rng.integers(0, 20, 500), "value": rng.random(500)})
        for _ in range(n)
    ]


def _api_items(n: int, base_url: str) -> list[Any]:
    from smallbig.workloads.api import api_workload

    return api_workload(base_url).prepare(n)


def _image_paths(n: int) -> list[str]:
    from smallbig.workloads.images import default_dataset_dir, image_files, make_images

    folder = default_dataset_dir()
    make_images(folder, 48)
    files = [str(p) for p in image_files(folder)]
    return [files[i % len(files)] for i in range(n)]


@dataclass(frozen=True)
class TaskKind:
    """A task of the suite: its function, how to make ``n`` items, and how many to run."""

    name: str
    fn: Callable[[Any], Any]
    make_items: Callable[..., list]
    items: int
    #: The items ask the weather API: ``make_items(n, base_url)``, with a server at that URL
    #: answering at :data:`API_LATENCY_S`.
    needs_api: bool = False


SUITE = (
    TaskKind("python_cpu", python_cpu, _seeds, 200),
    TaskKind("linalg", linalg, _seeds, 300),
    TaskKind("numba_parallel", numba_parallel, _seeds, 100),
    TaskKind("decode_image", decode_image, _image_paths, 96),
    TaskKind("io_wait", io_wait, _seeds, 200),
    TaskKind("tiny", tiny, _seeds, 20_000),
    TaskKind("big_argument", big_argument, megabyte_arrays, 200),
    TaskKind("mixed", mixed, _seeds, 200),
    TaskKind("skewed", skewed, _seeds, 300),
    TaskKind("large_result", large_result, _seeds, 200),
    TaskKind("regex_text", regex_text, _texts, 300),
    TaskKind("pandas_small", pandas_small, _frames, 400),
    TaskKind("weather_coroutine", weather_coroutine, _api_items, 400, needs_api=True),
)
API_LATENCY_S = 0.020
