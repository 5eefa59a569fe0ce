"""Checks of numeric inputs, shared by the command line (as argparse types) and the Python
API: finite, in range, and an error that names the input."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


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


def arg_number(
    minimum: float = 0.0, maximum: float = math.inf, above: bool = False
) -> Callable[[str], float]:
    """An argparse ``type=``: a finite number in range (argparse names the option)."""

    def parse(text: str) -> float:
        try:
            return number("it", float(text), minimum, maximum, above)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("it ")) from None

    return parse


def arg_count(minimum: int = 1) -> Callable[[str], int]:
    """An argparse ``type=``: a whole number ≥ ``minimum``."""

    def parse(text: str) -> int:
        try:
            return count("it", int(text) if text.lstrip("-").isdigit() else text, minimum)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("it ")) from None

    return parse


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: what is wrong, and where help is."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """``--backends SPEC...`` and ``--workers N``: every command that starts backends takes them."""
    parser.add_argument(
        "--backends",
        nargs="+",
        metavar="SPEC",
        help="backend names, or NAME@ADDRESS for a running cluster (default: every available one)",
    )
    parser.add_argument(
        "--workers", type=arg_count(), help="workers per backend (default: each one's own)"
    )


def add_counts(parser: argparse.ArgumentParser, *options: tuple[str, int, str]) -> None:
    """Whole-number options, each ``(flag, default, what it counts)``; help names the default."""
    for flag, default, what in options:
        parser.add_argument(
            flag, type=arg_count(), default=default, help=f"{what} (default: {default})"
        )


def add_cpus(parser: argparse.ArgumentParser) -> None:
    """``--cpus C``: the command, and every pool or local cluster it starts, held to C cores."""
    parser.add_argument(
        "--cpus",
        type=arg_number(above=True),
        metavar="C",
        help="run as a laptop of C cores: this command and every local pool or cluster it "
        "starts under one CPU quota (root; a scale model, see docs/clusters.md; default: none)",
    )


def add_run_folder(parser: argparse.ArgumentParser, name: str) -> None:
    """The optional positional ``name``: a run's output folder, by default the last run's."""
    parser.add_argument(
        name, nargs="?", help="output folder of a `smallbig run` (default: the last run's)"
    )


def answers(question: str, page: str) -> str:
    """A command's ``--help`` description: what it answers, in one line, and the page of
    ``docs/`` that explains it."""
    return f"{question} Explained in docs/{page} of smallbig's sources."
