"""A dataset maker: real image files with the mix of public chest X-ray sets.

Kermany's pediatric set is grayscale JPEGs of varying size (roughly 400-2900 px a side); NIH
ChestX-ray14 is 1024×1024 grayscale PNGs. We add RGB JPEG/PNG photos-like files so that mode
conversion is exercised. Content has structure (body outline, lungs, ribs, gradients) and noise,
so decoding and compression cost what they cost on real scans, not on flat colour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# (share, format, mode, min side, max side): deterministic mix by file index.
MIX = [
    (0.50, "JPEG", "L", 400, 2000),  # Kermany-like pediatric scans
    (0.20, "PNG", "L", 1024, 1024),  # NIH ChestX-ray14-like
    (0.15, "JPEG", "RGB", 200, 800),  # photos of films, screenshots
    (0.10, "PNG", "RGB", 200, 600),
    (0.05, "JPEG", "L", 2500, 3000),  # the occasional huge scan
]


def make_images(directory: str | Path, count: int, seed: int = 0) -> list[Path]:
    """Write ``count`` image files into ``directory``; deterministic by ``seed``.

    Existing files of the same name are kept, so a cached dataset is reused for free.

    Returns
    -------
    list of Path
        The files, sorted by name.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        fmt, mode, lo, hi = _kind(rng.random())
        ext = "jpg" if fmt == "JPEG" else "png"
        path = directory / f"img_{seed}_{index:05d}_{mode}.{ext}"
        if not path.exists():
            h = int(rng.integers(lo, hi + 1))
            w = h if lo == hi else int(h * rng.uniform(0.75, 1.35))
            image = Image.fromarray(scan(rng, h, w, mode), mode)
            tmp = path.with_suffix(".tmp")
            image.save(tmp, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
            tmp.rename(path)  # never leave a half-written file under the real name
        paths.append(path)
    return sorted(paths)


def _kind(u: float) -> tuple[str, str, int, int]:
    total = 0.0
    for share, fmt, mode, lo, hi in MIX:
        total += share
        if u < total:
            return fmt, mode, lo, hi
    return MIX[-1][1:]


def scan(rng: np.random.Generator, h: int, w: int, mode: str) -> np.ndarray:
    """A chest-radiograph-like picture: torso, two lungs, ribs, gradient and sensor noise."""
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    torso = ((x / 0.85) ** 2 + (y / 1.05) ** 2 < 1).astype(np.float32) * 0.55
    cx = rng.uniform(0.3, 0.4)
    lungs = sum(((x - s * cx) / 0.25) ** 2 + ((y + 0.05) / 0.55) ** 2 < 1 for s in (-1, 1)).astype(
        np.float32
    )
    ribs = 0.12 * (np.sin(y * rng.uniform(25, 35) + 3 * x**2) > 0.6)
    picture = 0.15 + torso - 0.35 * lungs + ribs * lungs + 0.1 * y
    picture += rng.normal(0, 0.04, (h, w)).astype(np.float32)
    gray = np.clip(picture * 255, 0, 255).astype(np.uint8)
    if mode == "L":
        return gray
    tint = rng.uniform(0.8, 1.2, 3).astype(np.float32)
    return np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)
