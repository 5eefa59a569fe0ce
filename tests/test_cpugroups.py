"""CPU quotas of a scale model: held to what they promise, measured, refused over the limit,
and gone however their owner ends (issue 41)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import namespaces_refused, ratio_on_some_try

from smallbig.backends import available, get_backend
from smallbig.backends.emulation.cpugroups import (
    CpuGroup,
    CpuGroupError,
    check_quotas,
    hierarchy,
    laptop,
)
from smallbig.workloads.tasks import python_long

# Its figures are measured times, CPU shares or rates: run with the machine to itself.
pytestmark = pytest.mark.alone


def _refused() -> str | None:
    try:
        check_quotas([0.1])
    except (CpuGroupError, OSError) as exc:
        return f"CPU groups refused here: {exc}"
    return None


REFUSED = _refused() if sys.platform == "linux" else "Linux CPU groups only"
needs_groups = pytest.mark.skipif(REFUSED is not None, reason=REFUSED or "")


def _groups(owner: int) -> list[str]:
    return [p.name for p in hierarchy().root.glob(f"smallbig-{owner}-*")]


def _script(body: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(body)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@needs_groups
def test_a_laptops_quota_holds_a_cpu_bound_pool_to_it():
    # In a process of its own: the quota takes in the process that joins, pytest's here.
    proc = _script(
        """
        import json, threading, time
        from smallbig.backends import get_backend
        from smallbig.backends.emulation.cpugroups import laptop
        from smallbig.workloads.tasks import python_cpu

        with laptop(0.5) as group, get_backend("processes", workers=2) as ex:
            list(ex.map(python_cpu, range(40), chunksize=4))  # workers up and warm
            before = group.usage()
            list(ex.map(python_cpu, range(600), chunksize=10))
            used = group.usage() - before
        print(json.dumps({"cores": used.cores(), "wall": used.wall_s}))
        """
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    used = json.loads(out.splitlines()[-1])
    # Two workers that could use two cores, held to half of one: 0.5 ± 15%.
    assert 0.425 <= used["cores"] <= 0.575, used
    assert not _groups(proc.pid)


@needs_groups
def test_quotas_over_the_limit_are_refused_before_anything_starts(tmp_path):
    from smallbig.backends.emulation.emulated import EmulatedCluster

    before = set(os.listdir(hierarchy().root))
    cores = os.cpu_count() or 1
    with pytest.raises(CpuGroupError, match=r"exceed 80% of this machine's"):
        EmulatedCluster("dask", nodes=cores * 2, cpus_per_node=0.5)
    with pytest.raises(ValueError, match="positive"):
        check_quotas([0.0])
    out = subprocess.run(
        [sys.executable, "-m", "smallbig", "run", "--cpus", str(cores * 0.9),
         "--workloads", "noop", "--backends", "serial", "--sizes", "2", "--repeats", "1",
         "--out", str(tmp_path / "res")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert "exceed 80%" in out.stdout and not (tmp_path / "res" / "records.csv").exists()
    assert set(os.listdir(hierarchy().root)) == before


def test_without_root_quotas_say_so_in_one_line(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(CpuGroupError, match="need root") as info:
        check_quotas([0.5])
    assert "\n" not in str(info.value)


@needs_groups
@pytest.mark.parametrize("sig", [None, signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_cpu_group_outlives_its_owner(sig, tmp_path):
    # A run of the command line as a laptop of 0.6 core, a process pool under it, long
    # enough to be stopped mid-way; `sig=None`: a run that ends by itself (22 s at 0.3 core,
    # mostly its imports).
    items = 8 if sig is None else 200_000
    cmd = [sys.executable, "-m", "smallbig", "run", "--cpus", "0.6",
           "--task", "smallbig.workloads.tasks:python_cpu", "--items-from", f"range:{items}",
           "--backends", "processes", "--sizes", str(items), "--repeats", "1",
           "--out", str(tmp_path / "res")]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        if sig is not None:
            deadline = time.monotonic() + 60
            while not _busy_pool(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            groups = _groups(proc.pid)
            assert len(groups) == 1 and groups[0].endswith("-laptop"), groups
            os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 15
        while _groups(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _groups(proc.pid), _groups(proc.pid)
        if sig is None:
            assert proc.returncode == 0, proc.stdout.read()
            meta = json.loads((tmp_path / "res" / "run.json").read_text())
            assert meta["cpu_quota"]["cpus"] == pytest.approx(0.6), meta["cpu_quota"]
            records = (tmp_path / "res" / "records.csv").read_text()
            assert records.count(",faithful") >= 4, records  # cold and warm, two backends
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _busy_pool(pid: int) -> bool:
    """Whether the command ``pid`` runs its process pool (two workers up)."""
    import psutil

    try:
        return len(psutil.Process(pid).children(recursive=True)) >= 2
    except psutil.Error:
        return False


@needs_groups
@pytest.mark.skipif("dask" not in available(), reason="pip install 'smallbig[dask]'")
def test_a_two_node_scale_model_beats_the_laptops_serial_and_each_node_keeps_its_quota():
    from smallbig.backends.emulation.emulated import EmulatedCluster
    from smallbig.results.records import metadata

    if (refused := namespaces_refused()) is not None:
        pytest.skip(refused)
    quota = 0.35  # the laptop's and each node's: 4 × 0.35 = 1.4 of 2 cores
    items = list(range(24))  # ~3.5 s on the laptop's serial
    used = []
    with EmulatedCluster("dask", nodes=2, cpus_per_node=quota) as cluster:
        assert cluster.info()["cpus_per_node"] == quota
        with laptop(quota) as group:
            assert metadata()["cpu_quota"]["cpus"] == pytest.approx(quota)
            assert group.info()["cpus"] == quota

            def speedup() -> float:
                # Serial first, with no Dask client open: a client's own threads in this
                # process took 12-50% of the laptop's 0.35 core from serial's loop.
                with get_backend("serial") as serial:
                    start = time.perf_counter()
                    expected = list(serial.map(python_long, items))
                    serial_s = time.perf_counter() - start
                with get_backend(cluster.spec) as ex:
                    list(ex.map(python_long, items[:2]))  # warm: its workers have the function
                    before = cluster.usage()
                    start = time.perf_counter()
                    assert list(ex.map(python_long, items, chunksize=2)) == expected
                    cluster_s = time.perf_counter() - start
                    used[:] = [a - b for a, b in zip(cluster.usage(), before, strict=True)]
                return serial_s / cluster_s

            # Two nodes of the laptop's compute: ideally 2x. Measured here 1.48-1.72x in
            # single tries (the workers' own threads spend CPU beside the task on a node this
            # small, and this shared machine's speed drifts ±20% between seconds-long runs:
            # serial alone read 3.2-4.8 s; one CI's three tries read 1.09, 2.46 and 1.36x).
            # The claim is that the nodes out-compute the laptop, clearly: 1.3x, and no
            # more than 2x by more than that drift (2.6); three tries.
            ratio_on_some_try("scale-model speedup", speedup, 1.3, 2.6, tries=3)
    # Each worker node (1, 2), while it had work: its quota ± 15%. (Over the whole map one
    # node read 0.29 core: it ran out of chunks 0.3 s before the other.)
    for node in used[1:]:
        assert 0.85 * quota <= node.active_cores() <= 1.15 * quota, used


def test_a_group_label_is_checked():
    with pytest.raises(ValueError, match="label"):
        CpuGroup("../etc", 0.5)


def _spinner(argv_prefix: list[str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([*(argv_prefix or []), sys.executable, "-c", "while True: pass"])


@needs_groups
def test_the_fidelity_monitor_tells_a_kept_quota_from_a_short_one_and_a_busy_machine():
    from smallbig.backends.emulation.fidelity import Group, Monitor

    with CpuGroup("watched", 0.3) as group:
        busy = _spinner(group.wrap([]))
        rivals: list[subprocess.Popen] = []
        try:
            time.sleep(0.3)
            watched = [Group("laptop", group.path, 0.3)]
            with Monitor(watched) as kept:
                time.sleep(1.5)
            assert kept.verdict.faithful and str(kept.verdict) == "faithful", kept.verdict
            [reading] = kept.verdict.groups
            assert 0.25 <= reading.cores <= 0.33 and reading.runnable > 0.9, reading
            # Watched as if it had been promised 0.6 core: it got half (what the monitor would
            # see of a group starved by a saturated machine; the scheduler here kept giving
            # a group its quota against two spinners at nice -20, so it cannot be staged).
            with Monitor([Group("laptop", group.path, 0.6)]) as short:
                time.sleep(1.5)
            text = str(short.verdict)
            assert text.startswith("unfaithful: laptop got") and "0.6 cores" in text, text
            assert 0.4 <= short.verdict.groups[0].share <= 0.6, short.verdict
            # Spinners outside every group on every core: the machine is saturated.
            rivals = [_spinner() for _ in range(os.cpu_count() or 1)]
            time.sleep(0.3)
            with Monitor(watched) as saturated:
                time.sleep(1.5)
            assert str(saturated.verdict).startswith("unfaithful: machine"), saturated.verdict
        finally:
            for proc in [busy, *rivals]:
                proc.kill()
                proc.wait()
    # One thread in a group of more than a core: it can use one, and got it (serial on a
    # laptop of 1.6 cores read "got 63%" before the threads' own bound).
    with CpuGroup("wide", 1.2) as group:
        alone = _spinner(group.wrap([]))
        try:
            time.sleep(0.3)
            with Monitor([Group("laptop", group.path, 1.2)]) as one_thread:
                time.sleep(1.5)
        finally:
            alone.kill()
            alone.wait()
    [reading] = one_thread.verdict.groups
    assert 0.8 <= reading.cores <= 1.05 and one_thread.verdict.faithful, one_thread.verdict
    with Monitor([]) as nothing:
        pass
    assert str(nothing.verdict) == ""


def test_a_scale_model_benchmark_needs_the_laptops_quota_and_fits_the_machine(tmp_path):
    from smallbig.bench.links import max_nodes

    # 80% of the cores, less a laptop and a scheduler's node of the same quota.
    cores = os.cpu_count() or 1
    assert max_nodes(0.25) == int(0.8 * cores / 0.25) - 2
    assert max_nodes(10.0) == 1
    out = subprocess.run(
        [sys.executable, "-m", "smallbig", "bench", "cluster", "--scale-model"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "--cpus C" in out.stdout, out.stdout + out.stderr


@needs_groups
def test_on_a_laptop_of_a_fraction_of_a_core_a_loop_holds_the_gil_and_no_pool_beats_serial(
    tmp_path,
):
    # Under 0.3 core a thread computing all along reads 0.3 CPU seconds a second: the profile
    # took such a loop for a task that waits (it "released the GIL"), and the model gave
    # every backend at least one core, so two processes were predicted twice as fast as
    # serial on a laptop that has a third of one.
    proc = _script(
        f"""
        import json, time
        from smallbig.backends import get_backend
        from smallbig.backends.emulation.cpugroups import laptop
        from smallbig import overhead
        from smallbig.model.costmodel import predict
        from smallbig.model.taskprofile import profile_task
        from smallbig.workloads.tasks import python_cpu

        if __name__ == "__main__":
            with laptop(0.3):
                cal = overhead(["serial", "processes"], 2, items=500, repeats=1,
                               path={str(tmp_path / "cal.json")!r})
                task = profile_task(python_cpu, list(range(17)))
                items = list(range(200))
                predicted = {{p.backend: p.seconds for p in predict(cal, len(items), task=task,
                                                                    cold=False)}}
                measured = {{}}
                for name in ("serial", "processes"):
                    with get_backend(name, workers=2) as ex:
                        list(ex.map(python_cpu, items[:8]))
                        start = time.perf_counter()
                        list(ex.map(python_cpu, items, chunksize="auto"))
                        measured[name] = time.perf_counter() - start
            print(json.dumps({{"gil": task.releases_gil, "cpu_count": cal["cpu_count"],
                              "predicted": predicted, "measured": measured}}))
        """
    )
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    got = json.loads(out.splitlines()[-1])
    assert got["gil"] is False and got["cpu_count"] == pytest.approx(0.3), got
    predicted, measured = got["predicted"], got["measured"]
    # Two processes share the laptop's 0.3 core: no faster than serial, as measured.
    assert predicted["processes"] >= 0.95 * predicted["serial"], got
    assert measured["processes"] >= 0.8 * measured["serial"], got
    for name in ("serial", "processes"):  # within the run's own check (~10-20% here)
        assert 0.6 <= predicted[name] / measured[name] <= 1.5, got



@needs_groups
@pytest.mark.skipif("ray" not in available(), reason="pip install 'smallbig[ray]'")
def test_an_engine_that_cannot_start_on_a_small_laptop_says_so_in_one_line():
    """Ray raises a bare Exception when its node does not register within its fixed 30 s, as
    at a tenth of a core (`smallbig overhead --cpus 0.1 --backends ray`: 99 s to fail, too
    long for the suite): it becomes an error the command prints as one line, naming the
    engine, what it said and the quota."""
    from smallbig.backends.errors import EngineStartError
    from smallbig.backends.ray_backend import _start_failure

    with (
        laptop(0.5),
        pytest.raises(EngineStartError) as caught,
        _start_failure("Ray's local cluster"),
    ):
        raise Exception("The current node timed out during startup.")
    said = str(caught.value)
    assert said.startswith("Ray's local cluster did not start: The current node timed out")
    assert "held to 0.5 cores" in said, said
    with pytest.raises(ValueError, match="bad"), _start_failure("Ray's local cluster"):
        raise ValueError("bad")  # our own kinds of error pass as they are
