"""Checks of numeric inputs, shared by the Python API and the command line (whose argparse
types wrap them): finite, in range, and an error that names the input."""

from __future__ import annotations

import math


def number(
    name: str, value: float, minimum: float = 0.0, maximum: float = math.inf, above: bool = False
) -> float:
    """``value`` if it is a finite number in range, else a ``ValueError`` naming ``name``.

    ``above`` makes ``minimum`` exclusive (a bandwidth of 0 means nothing gets through).
    """
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    low = value <= minimum if above else value < minimum
    if low or value > maximum:
        lo = f"> {minimum:g}" if above else f"≥ {minimum:g}"
        hi = f" and ≤ {maximum:g}" if maximum < math.inf else ""
        raise ValueError(f"{name} must be {lo}{hi}, got {value:g}")
    return value


def count(name: str, value: int, minimum: int = 1) -> int:
    """``value`` if it is a whole number ≥ ``minimum``, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            as_float = math.nan
        if not as_float.is_integer():
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        value = int(as_float)
    if value < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}, got {value}")
    return value
