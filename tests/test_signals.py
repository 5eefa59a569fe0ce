"""A run stopped by SIGINT, SIGTERM or SIGKILL leaves nothing behind, and resumes cleanly."""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

import pandas as pd
import psutil
import pytest
from helpers import check_memory_recorded

from smallbig.backends import available

pytestmark = pytest.mark.slow

GROUPS = {
    "local": ["serial", "threads", "processes", *(["loky"] if "loky" in available() else [])],
    "dask": ["serial", "dask"],
    "ray": ["serial", "ray"],
    "spark": ["serial", "spark"],
}
KEY = ["workload", "backend", "size", "repeat", "phase"]
# Enough points that the signal lands mid-run (it is sent once the last backend has measured
# one), few enough that the resumed run is quick: Ray starts twice in it.
REPEATS = 8


def _run(out, backends, *extra):
    cmd = [
        sys.executable, "-m", "smallbig", "run", "--workloads", "api", "sleep",
        "--backends", *backends, "--sizes", "4", "--repeats", str(REPEATS), "--out", str(out),
        *extra,
    ]  # fmt: skip
    # A session of its own, as a job in a terminal: SIGINT then goes to the whole group, as
    # Ctrl-C does.
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _tree(pid: int, seen: dict[int, float]) -> None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                seen[child.pid] = child.create_time()


def _alive(seen: dict[int, float]) -> list[str]:
    left = []
    for pid, created in seen.items():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {' '.join(proc.cmdline())[:80]}")
    return left


# Ctrl-C and SIGTERM unwind through the same close() once the command has caught them: both
# on the local pools and Dask, SIGTERM alone on Ray and Spark (whose own handlers it meets);
# SIGKILL, which leaves everything to the reapers and the resume, on every group.
SIGNALS = [(group, sig) for group in GROUPS for sig in (signal.SIGINT, signal.SIGTERM,
           signal.SIGKILL) if not (sig == signal.SIGINT and group in ("ray", "spark"))]


@pytest.mark.parametrize(("group", "sig"), SIGNALS, ids=[f"{g}-{s}" for g, s in SIGNALS])
def test_a_signal_stops_everything_and_resume_completes(group, sig, tmp_path):
    backends = GROUPS[group]
    if any(b not in available() for b in backends):
        pytest.skip(f"{group} is not installed")
    out = tmp_path / "out"
    proc = _run(out, backends)
    seen: dict[int, float] = {}
    records = out / "records.csv"
    deadline = time.monotonic() + 180
    # Stop it once the last backend has measured a point: every process is then up.
    while time.monotonic() < deadline and proc.poll() is None:
        _tree(proc.pid, seen)
        if records.exists() and f",{backends[-1]}," in records.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read()
    _tree(proc.pid, seen)
    os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)
    stopped = time.monotonic()
    output, _ = proc.communicate(timeout=60)
    expected = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}[sig]
    assert proc.returncode == expected, output
    if sig != signal.SIGKILL:
        assert "Traceback" not in output, output
        assert output.rstrip().endswith("stopped what it had started" if sig == signal.SIGTERM
                                        else "interrupted"), output  # fmt: skip
    while _alive(seen) and time.monotonic() - stopped < 15:
        time.sleep(0.2)
    assert not _alive(seen), _alive(seen)
    kept = pd.read_csv(records)
    leftovers = os.path.join(tempfile.gettempdir(), f"smallbig-*-{proc.pid}-*")
    if sig != signal.SIGKILL:
        # A stop it saw: every row it measured is whole, its own temporary folders are gone.
        # (The resume that follows a SIGKILL, below, is the same code after the harder end.)
        assert len(kept) >= 1 and kept["correct"].all() and (kept["wall_s"] > 0).all()
        assert not glob.glob(leftovers)
        return
    again = _run(out, backends, "--resume")
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    done = pd.read_csv(records)
    assert len(done) == len(backends) * 2 * (REPEATS + 1) and not done.duplicated(KEY).any()
    assert done.iloc[: len(kept)][KEY].equals(kept[KEY])  # the rows measured before stay
    assert done["correct"].all() and (done["wall_s"] > 0).all()
    # Temporary folders of the killed run are gone (the next start sweeps them).
    assert not glob.glob(leftovers)
    # Each backend's memory, in its records and its calibration (tests/test_memory.py
    # checks the in-process backends these groups leave out against its own process).
    assert check_memory_recorded(out) == set(backends)


FRAGILE = """
import os
import signal


def fragile(x):
    # The first item 3 that runs in a worker process (not in the run's own process, whose
    # parent is the test) kills that worker, once: a worker lost mid-run.
    if x == 3 and os.getppid() != int(os.environ["SAFE_PARENT"]):
        try:
            os.close(os.open(os.environ["KILLED_MARKER"], os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return x * x
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x
"""


# The run's two outcomes: a pool that cannot retry (the point recorded as failed, the pool
# restarted) and an engine that retries (Dask's). Ray's and Spark's own retries of a killed
# worker's task are test_clusters.py's (58 s of the suite's time less than here, where each
# ran a whole run around them).
@pytest.mark.parametrize("backend", ["processes", "loky", "dask"])
def test_a_dead_worker_is_recorded_and_the_run_goes_on(backend, tmp_path):
    if backend not in available():
        pytest.skip(f"{backend} is not installed")
    (tmp_path / "fragile.py").write_text(FRAGILE)
    env = {**os.environ, "SAFE_PARENT": str(os.getpid()), "KILLED_MARKER": str(tmp_path / "k")}
    cmd = [
        sys.executable, "-m", "smallbig", "run", "--task", "fragile:fragile",
        "--items-from", "range:8", "--backends", "serial", backend, "--sizes", "4", "8",
        "--repeats", "2", "--out", "out",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "k").exists()  # a worker was killed
    records = pd.read_csv(tmp_path / "out" / "records.csv")
    assert len(records) == 2 * 2 * 3 and not records.duplicated(KEY).any()
    failed = records[records["failure"].notna()]  # pandas reads an empty cell as NaN
    ok = records.drop(failed.index)
    assert ok["correct"].all() and (ok["errors"] == 0).all()
    if len(failed):  # the pool could not retry: the point is recorded, with the reason
        assert len(failed) == 1 and failed["wall_s"].isna().all()
        assert "could not be measured" in out.stdout and "restarting it" in out.stdout
        after = records[(records["backend"] == backend) & (records.index > failed.index[0])]
        assert len(after) and after["correct"].all()  # the restarted backend measured on
    else:  # the engine retried the task on another worker
        assert backend == "dask", "a dead process-pool worker breaks the pool"


ABANDONED = """
import sys

from smallbig.backends import get_backend

if __name__ == "__main__":
    ex = get_backend(sys.argv[1], workers=2)  # never shut down, never used in a `with`
    print(sum(ex.map(abs, range(-5, 5))), flush=True)
"""


@pytest.mark.parametrize("backend", ["processes", "loky", "dask", "ray", "spark"])
def test_a_backend_never_shut_down_is_stopped_at_exit(backend, tmp_path):
    if backend not in available():
        pytest.skip(f"{backend} is not installed")
    (tmp_path / "abandon.py").write_text(ABANDONED)
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "abandon.py"), backend],
        stdout=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    seen: dict[int, float] = {}
    while proc.poll() is None:
        _tree(proc.pid, seen)
        time.sleep(0.05)
    assert proc.returncode == 0 and proc.stdout.read().strip() == "25"
    assert seen, "it started processes"
    deadline = time.monotonic() + 15
    while _alive(seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(seen), _alive(seen)


def test_temp_folders_of_a_dead_owner_are_swept(tmp_path):
    from smallbig.backends.lifeline import owned_temp_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = tempfile.mkdtemp(prefix=f"smallbig-put-{dead}-")
    mine = owned_temp_dir("smallbig-put-")
    try:
        assert not os.path.exists(stale) and os.path.isdir(mine)
        assert f"smallbig-put-{os.getpid()}-" in mine
        again = owned_temp_dir("smallbig-put-")  # an owner alive keeps its folders
        assert os.path.isdir(mine)
        os.rmdir(again)
    finally:
        os.rmdir(mine)


def test_an_interrupt_a_finalizer_swallowed_is_delivered_again():
    # A SIGTERM that lands inside a `__del__` (Dask's Future.__del__ releasing its key, in a CI
    # run) is printed as "Exception ignored" and lost; the run then finished with exit code 0.
    from smallbig import cli

    class Releases:
        def __del__(self):
            cli._raise_terminated(signal.SIGTERM, None)  # the handler, run inside a finalizer

    previous = signal.signal(signal.SIGTERM, cli._raise_terminated)
    hook, sys.unraisablehook = sys.unraisablehook, cli._redeliver_interrupts
    try:
        with pytest.raises(cli.Terminated):
            Releases()  # dropped at once: its __del__ raises, Python swallows it
            for _ in range(200):
                time.sleep(0.005)
    finally:
        sys.unraisablehook = hook
        signal.signal(signal.SIGTERM, previous)
