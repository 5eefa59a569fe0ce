"""Every command in README.md runs, with small sizes where the README's would take minutes."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import RUN_COMMAND, TEST_COMMAND

from smallbig.backends import available

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.slow

# Appended to a command (argparse keeps the last value): the same command, smaller.
SMALL = {
    # Three sizes, so that `bench advice` can hold one out and fit on two.
    # No --out: each README run writes where the README says (a second run into the same
    # folder is refused without --resume or --overwrite, so the README must not do that).
    "run": ["--sizes", "2", "4", "8", "--repeats", "1"],
    "overhead": [
        "--backends",
        "serial",
        "threads",
        "dask",  # for `bench cluster --profile cal.json`: the benchmarks' own minute saved
        "--items",
        "500",
        "--repeats",
        "1",
        "--profile",
        "cal.json",
    ],
    "advise": ["--profile", "results/calibration.json"],  # the first run's: no quick one
    "make-images": ["--count", "3"],
    "bench overhead": [
        "--backends",
        "serial",
        "threads",
        "--items",
        "1000",
        "--tasks",
        "100",
        "--repeats",
        "1",
    ],
    "bench kernels": ["--side", "40", "--repeats", "1"],
    "bench tasks": [
        "--backends",
        "serial",
        "threads",
        "--tasks",
        "tiny",
        "io_wait",
        "weather_coroutine",  # the one that needs the weather API's server
        "--scale",
        "0.1",
        "--repeats",
        "1",
        "--colds",
        "1",
    ],
    "bench api": ["--concurrency", "2", "--rounds", "2", "--latency-ms", "10"],
    # Two cases of each (40 s less here): one bound by waits, one by the scheduler or the bytes.
    "bench cluster": ["--engines", "dask", "--workers", "2", "--repeats", "1", "--profile",
                      "cal.json", "--cases", "tiny", "wait 10"],
    "bench cluster --links": ["--engines", "dask", "--repeats", "1", "--nodes", "2",
                              "--bandwidths-mbps", "0", "--profile", "cal.json", "--cases",
                              "put once", "images"],
    "bench memory": [
        "--backends",
        "serial",
        "threads",
        "--items",
        "40",
        "--repeats",
        "1",
        "--images-backends",
    ],
}
# The default run measures every workload on every backend: keep two cheap ones.
DEFAULT_RUN = ["--workloads", "noop", "sleep", "--backends", "serial", "threads"]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.+?)\n```", README.read_text(), re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def _small(argv: list[str]) -> list[str]:
    sub = " ".join(argv[1:4] if "--links" in argv else argv[1:3]) if argv[1] == "bench" else argv[1]
    extra = SMALL.get(sub, [])
    if argv[1] == "run" and "--backends" not in argv:
        extra = DEFAULT_RUN + extra
    if argv[1] == "run" and "--workloads" in argv and "--backends" not in argv:
        extra = ["--backends", "serial", "threads", *extra]
    return argv + extra


@pytest.mark.timeout(900)  # every command of the README, the cluster benchmarks included
def test_readme_commands_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SMALLBIG_CACHE", str(tmp_path / "cache"))
    commands = readme_commands()
    assert commands[:2] == [RUN_COMMAND, TEST_COMMAND]
    ran = 0
    for command in [*commands[2:], "smallbig run"]:  # the first command's job, small
        argv = shlex.split(command)
        assert argv[0] == "smallbig", command
        if argv[1] == "serve-api" or "@" in command:
            continue  # run by the tests below, which need a server or a cluster
        run = [sys.executable, "-m", "smallbig", *_small(argv)[1:]]
        out = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
        ran += 1
    assert ran >= 10
    assert (tmp_path / "xrays").is_dir()
    for out in ("results", "linalg-results", "xrays-results", "smallbig-results"):
        assert (tmp_path / out / "records.csv").exists(), out
    assert (tmp_path / "overhead.png").exists() and (tmp_path / "phase_diagram.png").exists()


def test_readme_serve_api_command(tmp_path):
    [command] = [c for c in readme_commands() if c.startswith("smallbig serve-api")]
    argv = [sys.executable, "-m", "smallbig", *shlex.split(command)[1:]]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        import urllib3

        r = urllib3.request(
            "GET",
            f"{url}/v1/environment/rainfall",
            fields={"date_time": "2024-01-01T00:00:00"},
            timeout=10,
        )
        assert r.status in (200, 500, 503)  # the command asks for 1% injected errors
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest.fixture(scope="module", params=[e for e in ("dask", "ray", "spark") if e in available()])
def cluster(request) -> tuple[str, str]:
    """An engine and the address of the session's cluster of it (conftest.py), started before
    any test's leak check looks."""
    return request.param, request.getfixturevalue(f"{request.param}_address")


def test_readme_cluster_commands(cluster, tmp_path):
    engine, address = cluster
    [command] = [c for c in readme_commands() if f"{engine}@" in c]
    argv = shlex.split(re.sub(rf"{engine}@\S+", f"{engine}@{address}", command))
    run = [
        sys.executable, "-m", "smallbig", *argv[1:], "--workloads", "noop", *SMALL["run"],
        "--out", "results",
    ]  # fmt: skip
    out = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    records = (tmp_path / "results" / "records.csv").read_text()
    assert f"{engine}@" in records and ",serial," in records  # serial: the baseline
    assert (tmp_path / "results" / "noop_scaling.png").exists()


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the calibration example writes cal.json
    blocks = re.findall(r"```python\n(.+?)\n```", README.read_text(), re.S)
    spaces: list[dict] = [{} for _ in blocks]
    for code, namespace in zip(blocks, spaces, strict=True):
        exec(compile(code, "README.md", "exec"), namespace)
    [protocol] = [ns for ns in spaces if "results" in ns]
    assert protocol["results"] == ["A", "B"] and protocol["total"] == 10_000_000
    [own] = [ns for ns in spaces if "advice" in ns]
    assert own["task"].cores_used > 0 and own["advice"][0].backend in ("serial", "threads")
    assert (tmp_path / "cal.json").exists()
