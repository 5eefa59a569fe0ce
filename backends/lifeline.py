"""Processes smallbig starts die with the process that started them, whatever kills it.

A SIGKILL (the OOM killer, ``kill -9``) runs no cleanup: a pool's workers blocked on their
task queue, or a server waiting for requests, would live on for ever. So each of them watches
its owner and exits by itself within a fraction of a second of the owner's death, and the
temporary folders an owner made are named after it, so that the next start removes those
whose owner is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

from smallbig.backends.inner import set_env

POLL_S = 0.25


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:  # no /proc (macOS): kill(0) said it exists
        return True


def watch_owner(pid: int, on_death: int = 1) -> threading.Thread:
    """Start a daemon thread that ends this process (``os._exit(on_death)``) once ``pid`` is
    gone; cost: one ``kill(pid, 0)`` every 0.25 s."""

    def watch() -> None:
        while alive(pid):
            threading.Event().wait(POLL_S)
        os._exit(on_death)  # no cleanup to run: the owner that needed the results is gone

    thread = threading.Thread(target=watch, name="smallbig-owner-watch", daemon=True)
    thread.start()
    return thread


def start_pool_worker(env: dict[str, str | None], owner: int) -> None:
    """The initializer of a process-pool worker of ours (``processes``, ``loky``).

    ``env`` is set before the worker's first task imports anything (``None``: unset): a
    native library that loads later reads its thread count from it. A worker blocked on its
    task queue never notices that the pool's owner was killed (it may hold both ends of the
    queue's pipe itself): it watches the owner instead. Ctrl-C in a terminal reaches every
    process of the group: the owner stops the pool and says so in one line; a worker quits
    silently instead of printing its own traceback.
    """
    import signal

    set_env(env)
    watch_owner(owner)
    signal.signal(signal.SIGINT, _quit_quietly)


def _quit_quietly(*_: object) -> None:
    os._exit(1)


def owned_temp_dir(prefix: str, base: str | None = None) -> str:
    """A new temporary folder ``{prefix}{pid}-XXXX`` (under ``base``, default the system's
    temporary folder): :func:`sweep` knows whose it is."""
    sweep(prefix, base)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base)


def sweep(prefix: str, base: str | None = None) -> list[str]:
    """Remove the temporary folders ``{prefix}{pid}-*`` (under ``base``) whose owner ``pid``
    is gone (it was killed before it could remove them); return what was removed."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(base or tempfile.gettempdir()):
            m = pattern.match(entry.name)
            if m and entry.is_dir(follow_symlinks=False) and not alive(int(m.group(1))):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    return removed


def start_reaper(folder: str) -> subprocess.Popen:
    """Start a process that outlives this one to clean up after it if it is killed.

    Once this process is gone, the reaper stops every process that holds a file under
    ``folder`` open (SIGTERM, then SIGKILL after 2 s) and removes ``folder``. An engine's
    helpers that outlive their parent (Ray's agents lived 1–3 minutes after its driver's
    SIGKILL) all keep their logs there. Stop it with :func:`stop_reaper` on a normal shutdown.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "smallbig.backends.lifeline", str(os.getpid()), folder],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session: a Ctrl-C in the terminal, which reaches the whole process group,
        # must not take the reaper down with the processes it is there to clean up after.
        start_new_session=True,
    )


def stop_reaper(reaper: subprocess.Popen) -> None:
    """End a reaper whose owner cleaned up by itself."""
    reaper.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        reaper.wait(timeout=5)
    reaper.kill()  # does nothing if it has exited
    reaper.wait()


def _reap(owner: int, folder: str) -> None:
    while alive(owner):
        if not os.path.isdir(folder):
            return  # cleaned up by its owner
        threading.Event().wait(POLL_S)
    stop_holders(folder)
    shutil.rmtree(folder, ignore_errors=True)


def stop_holders(folder: str, spare: int | None = None) -> None:
    """Stop every process but ``spare`` that holds a file under ``folder`` open (SIGTERM,
    then SIGKILL after 2 s)."""
    import psutil

    holders = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid != spare and any(f.path.startswith(folder) for f in proc.open_files()):
                holders.append(proc)
                proc.terminate()
    _, left = psutil.wait_procs(holders, timeout=2)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()


if __name__ == "__main__":
    _reap(int(sys.argv[1]), sys.argv[2])
