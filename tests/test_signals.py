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

from backends import available

pytestmark = pytest.mark.slow

GROUPS = {
    "local": ["serial", "threads", "processes"],
    "dask": ["serial", "dask"],
    "ray": ["serial", "ray"],
}
KEY = ["workload", "backend", "size", "repeat", "phase"]


def _run(out, backends, *extra):
    cmd = [
        sys.executable, "-m", "compare.cli", "run", "--workloads", "api", "sleep",
        "--backends", *backends, "--sizes", "4", "--repeats", "30", "--out", str(out), *extra,
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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=str)
@pytest.mark.parametrize("group", list(GROUPS))
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
    again = _run(out, backends, "--resume")
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    done = pd.read_csv(records)
    assert len(done) == len(backends) * 2 * 31 and not done.duplicated(KEY).any()
    assert done.iloc[: len(kept)][KEY].equals(kept[KEY])  # the rows measured before stay
    assert done["correct"].all() and (done["wall_s"] > 0).all()
    # Temporary folders of the killed run are gone (the next start sweeps them).
    assert not glob.glob(os.path.join(tempfile.gettempdir(), f"smallbig-*-{proc.pid}-*"))
