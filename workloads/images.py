"""The images workload: decode a file, standardise it, run the pixel kernel, return a summary.

Aspect ratio: the image is centre-cropped to the target's aspect ratio, then resized
(``ImageOps.fit``), as training pipelines for X-ray classifiers usually do, so nothing is
stretched and no padding enters the statistics.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from smallbig.workloads.base import Workload
from smallbig.workloads.imagegen import make_images
from smallbig.workloads.kernels import KERNELS

SIZE = (256, 256)


@dataclass(frozen=True)
class ImageItem:
    """One file to process: by path (a few hundred bytes to ship; the workers read the file),
    or with its bytes in ``data``, for workers that do not share the driver's filesystem."""

    path: str
    size: tuple[int, int] = SIZE
    kernel: str = "numba"
    out_dir: str | None = None
    data: bytes | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return Path(self.path).name


def process_image(item: ImageItem) -> dict:
    """Decode, convert to 8-bit grayscale, fit to ``item.size``, apply the kernel.

    Returns
    -------
    dict
        ``source`` (width, height, mode), ``shape``, ``mean`` and ``sha1`` of the output
        pixels, and ``output`` (path) when ``item.out_dir`` is set. Never the array itself.

    Raises
    ------
    OSError, PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError
        For corrupt, truncated, empty or non-image files, and for decompression bombs
        (Pillow's limit, its warning included).
    """
    with warnings.catch_warnings():
        # Pillow only warns between 1x and 2x its pixel limit; a bomb is a bomb.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(item.path if item.data is None else io.BytesIO(item.data)) as image:
            source = (image.width, image.height, image.mode)
            image.load()
            gray = image.convert("L")
    fitted = ImageOps.fit(gray, item.size, method=Image.Resampling.BILINEAR)
    pixels = KERNELS[item.kernel](np.asarray(fitted))
    result = {
        "source": list(source),
        "shape": list(pixels.shape),
        "mean": round(float(pixels.mean()), 6),
        "sha1": hashlib.sha1(pixels.tobytes()).hexdigest()[:16],
    }
    if item.out_dir is not None:
        out = Path(item.out_dir) / f"{Path(item.path).stem}.png"
        Image.fromarray(pixels).save(out)
        result["output"] = str(out)
    return result


def image_files(directory: str | Path) -> list[Path]:
    """Every regular file in ``directory`` (sorted); Pillow decides what is an image."""
    return sorted(
        p for p in Path(directory).iterdir() if p.is_file() and not p.name.startswith(".")
    )


def images_workload(
    directory: str | Path | None = None,
    *,
    count: int = 48,
    kernel: str = "numba",
    size: tuple[int, int] = SIZE,
    out_dir: str | None = None,
    ship_bytes: bool = False,
) -> Workload:
    """The images workload over ``directory`` (a user folder, or a generated dataset).

    With ``ship_bytes``, each item carries its file's bytes, so that every backend ships the
    encoded image to its workers as a cluster without shared storage must; otherwise items
    are paths, read where the task runs.

    With no ``directory``, ``count`` files are generated (once, then cached) under the user's
    cache dir. Items cycle over the files when more are asked for than exist.

    ``prepare(n)`` takes the files in a balanced order (:func:`balanced_order`, by pixel
    count): every size sees about the folder's mean image, so the cost per item does not
    drift with ``n`` and times at different sizes can be compared and fitted.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}, expected one of {sorted(KERNELS)}")
    if directory is None:
        directory = default_dataset_dir()
        make_images(directory, count)
    files = image_files(directory)
    if not files:
        raise ValueError(f"no files in image folder {directory}")

    pixels = [_pixels(f) for f in files]
    # One order per seed, shared by every size: a folder of 100,000 files takes ~1.4 s to order.
    order_for = functools.cache(lambda seed: balanced_order(pixels, seed))

    def prepare(n: int, seed: int = 0) -> list[ImageItem]:
        # Deterministic by seed, so every backend sees the same items.
        order = order_for(seed)
        chosen = [files[order[i % len(files)]] for i in range(n)]
        return [
            ImageItem(str(f), size, kernel, out_dir, f.read_bytes() if ship_bytes else None)
            for f in chosen
        ]

    params = {
        "directory": str(Path(directory).resolve()),
        "kernel": kernel,
        "size": list(size),
        "ship_bytes": ship_bytes,
    }
    # Pillow decodes and resizes, and the numba kernels run, with the GIL released.
    return Workload(
        "images", prepare, process_image, releases_gil=True, params=params, data_size=_file_bytes
    )


def _file_bytes(item: ImageItem) -> int:
    """The data an item stands for: its encoded file (decoded, it is larger)."""
    return os.path.getsize(item.path) if item.data is None else len(item.data)


def balanced_order(costs: list[float], seed: int = 0) -> list[int]:
    """A permutation of ``range(len(costs))`` whose every prefix has about the mean cost.

    Greedy: each next item is the one that brings the running total closest to ``k`` times
    the mean cost. The first item is the one nearest the mean, and large images enter as soon
    as the prefix can carry them. A random order makes 1 or 10 items as likely to be all
    large images as typical ones, so time per item would drift with ``n`` and the fits of
    different sizes would disagree. ``seed`` breaks ties between files of equal cost.
    """
    if not costs:
        return []
    mean = sum(costs) / len(costs)
    ties = np.random.default_rng(seed).permutation(len(costs))
    pool = sorted(zip(costs, ties.tolist(), range(len(costs)), strict=True))
    keys = [cost for cost, *_ in pool]
    order, total = [], 0.0
    for k in range(1, len(costs) + 1):
        want = k * mean - total
        at = bisect.bisect_left(keys, want)
        # The nearest cost is at the insertion point or just before it.
        if at == len(keys) or (at > 0 and want - keys[at - 1] <= keys[at] - want):
            at -= 1
        cost, _, index = pool.pop(at)
        del keys[at]
        order.append(index)
        total += cost
    return order


def _pixels(path: Path) -> float:
    # The header alone gives the size, which drives decode and resize cost; a file Pillow
    # cannot read costs nothing to order (it fails fast when processed).
    try:
        with Image.open(path) as image:
            return float(image.width * image.height)
    except Exception:
        return 0.0


def default_dataset_dir() -> Path:
    """Where the generated dataset is cached between runs."""
    from smallbig.workloads.base import cache_dir

    return cache_dir() / "images"
