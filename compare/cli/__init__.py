"""The ``smallbig`` command line: :func:`main` parses (:mod:`.parsers`), calls the command
(:mod:`.commands`, or a benchmark's own in :mod:`smallbig.bench`) and turns Ctrl-C, SIGTERM and
bad input into an exit status and one line."""

from __future__ import annotations

import _thread
import faulthandler
import importlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console

from smallbig.backends.errors import EngineStartError
from smallbig.cli.parsers import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``smallbig`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve-api"]:
        # The server owns its options (and its --help).
        from smallbig.workloads.weather_server import main as serve_main

        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    # A pipe or CI log is not a terminal: 100 columns, what the tables are laid out for.
    console = Console(width=None if sys.stdout.isatty() else 100)
    # SIGTERM (timeout, docker stop, Slurm, systemd) stops a command as Ctrl-C does: every
    # `with` and `finally` on the way out stops what it started, and measured rows stay.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    # A command started in the background by a script inherits SIGINT ignored (POSIX shells
    # do that to `cmd &`), and Python then never raises KeyboardInterrupt: `kill -INT` left
    # `smallbig cluster` holding its namespaces. Every command stops on it, as it says.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    # `kill -USR1 PID` prints where every thread of a command that seems stuck is.
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _redeliver_interrupts
    try:
        from smallbig.backends.emulation.cpugroups import laptop

        # The laptop's quota is taken before the command starts anything: every pool and
        # local cluster it starts is this process's child, and inherits it.
        with laptop(getattr(args, "cpus", None)):
            return _command(args.func)(args, console)
    except Terminated:
        console.print("[red]terminated (SIGTERM)[/red]: stopped what it had started")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130
    except (ValueError, TypeError, ImportError, ConnectionError, OSError, EngineStartError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _command(func: str | Callable[..., int]) -> Callable[..., int]:
    """The command a parser names as ``"module:function"``, imported now: ``smallbig --help``
    and a mistyped option load no engine nor benchmark."""
    if callable(func):
        return func
    module, name = func.split(":")
    return getattr(importlib.import_module(module), name)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as on Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def _redeliver_interrupts(unraisable: Any) -> None:
    """Deliver again a Ctrl-C or SIGTERM that a ``__del__`` or callback swallowed.

    A signal handler raises in whatever frame runs; when that is a finalizer (a Dask
    ``Future.__del__`` releasing its key, say) Python prints "Exception ignored" and goes on,
    and the run would finish as if never stopped. The signal is raised again in the main
    thread a moment later, from a timer thread: raised from this hook, it would be swallowed
    again (the hook runs inside the finalizer's frame).
    """
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        signum = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
        timer = threading.Timer(0.01, _thread.interrupt_main, (signum,))
        timer.daemon = True
        timer.start()
        return
    sys.__unraisablehook__(unraisable)


if __name__ == "__main__":
    sys.exit(main())
