"""What happens when things go wrong: cut records, refused folders, corrupt files."""

from __future__ import annotations

import json
import warnings

import pytest

from smallbig.model.calibrate import load_profile
from smallbig.results.records import FIELDS, RecordWriter, load_records, read_metadata
from smallbig.running.runner import run


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A small real run: serial and threads, two sizes, one warm repeat."""
    out = tmp_path_factory.mktemp("run")
    run(["noop"], ["serial", "threads"], sizes=[3, 7], repeats=1, out_dir=out, progress=False)
    return out


def test_resume_drops_a_row_cut_at_any_byte(measured, tmp_path):
    whole = (measured / "records.csv").read_bytes()
    last = whole.rstrip(b"\n").rfind(b"\n") + 1  # where the last row starts
    rows = whole.count(b"\n") - 1
    for cut in range(last + 1, len(whole)):  # every byte of the last row, newline excluded
        (tmp_path / "records.csv").write_bytes(whole[:cut])
        writer = RecordWriter(tmp_path, resume=True)
        writer.close()
        assert "incomplete last row" in writer.repaired
        assert (tmp_path / "records.csv").read_bytes() == whole[:last]
        assert len(writer.done) == rows - 1  # the cut point is measured again
    (tmp_path / "records.csv").write_bytes(whole)
    writer = RecordWriter(tmp_path, resume=True)
    writer.close()
    assert writer.repaired is None and len(writer.done) == rows


def test_resume_after_a_cut_measures_the_point_again(measured, tmp_path):
    whole = (measured / "records.csv").read_bytes()
    (tmp_path / "records.csv").write_bytes(whole[:-7])  # the kill came mid-row
    with pytest.warns(UserWarning, match="incomplete last row"):
        again = run(
            ["noop"],
            ["serial", "threads"],
            sizes=[3, 7],
            repeats=1,
            out_dir=tmp_path,
            resume=True,
            progress=False,
        ).records
    before = load_records(measured)
    assert len(again) == len(before)
    assert not again.duplicated(["workload", "backend", "size", "repeat", "phase"]).any()
    assert again["correct"].all() and (again["wall_s"] > 0).all()


def test_a_run_refuses_to_replace_records_unless_asked(measured, tmp_path):
    for name in ("records.csv", "run.json", "calibration.json"):
        (tmp_path / name).write_bytes((measured / name).read_bytes())
    stale = tmp_path / "noop_scaling.png"
    stale.write_bytes(b"an old figure")
    meta = read_metadata(tmp_path)
    meta["outputs"] = [str(stale)]
    (tmp_path / "run.json").write_text(json.dumps(meta))
    kept = (tmp_path / "records.csv").read_bytes()
    with pytest.raises(ValueError, match=r"--resume.*--overwrite"):
        run(["noop"], ["serial"], sizes=[2], repeats=1, out_dir=tmp_path, progress=False)
    assert (tmp_path / "records.csv").read_bytes() == kept and stale.exists()
    records = run(
        ["noop"],
        ["serial"],
        sizes=[2],
        repeats=1,
        out_dir=tmp_path,
        overwrite=True,
        progress=False,
        report=False,  # this run's own figures would take the stale one's name
    ).records
    assert set(records["size"]) == {2} and not stale.exists()  # nothing of the old run left
    assert set(load_profile(tmp_path / "calibration.json")["backends"]) == {"serial"}


@pytest.mark.parametrize(
    "name, content",
    [
        ("records.csv", ""),
        ("records.csv", ",".join(FIELDS) + '\n"noop,serial\n'),
        ("run.json", ""),
        ("run.json", "{not json"),
        ("calibration.json", "{}"),
        ("calibration.json", "[1, 2]"),
        ("calibration.json", '{"backends": {}}'),
    ],
)
def test_an_empty_or_corrupt_file_is_named(name, content, tmp_path):
    (tmp_path / name).write_text(content)
    read = {
        "records.csv": lambda: load_records(tmp_path),
        "run.json": lambda: read_metadata(tmp_path),
        "calibration.json": lambda: load_profile(tmp_path / name),
    }[name]
    with pytest.raises(ValueError, match=str(tmp_path / name)):
        read()


def test_json_files_are_replaced_whole(tmp_path):
    from smallbig.results.records import write_json

    write_json(tmp_path / "x.json", {"a": 1})
    write_json(tmp_path / "x.json", {"a": 2})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left


def test_no_warning_on_a_clean_resume(measured, tmp_path):
    (tmp_path / "records.csv").write_bytes((measured / "records.csv").read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RecordWriter(tmp_path, resume=True).close()


def test_a_folder_of_only_corrupt_images_says_so_and_fails(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(3):
        (folder / f"scan{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(i + 10)))
    cmd = [
        sys.executable, "-m", "smallbig", "run", "--workloads", "images", "--images",
        str(folder), "--backends", "serial", "threads", "--sizes", "2", "3", "--repeats", "1",
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "nothing could be processed in images" in out.stdout
    records = load_records(tmp_path / "out")
    assert (records["errors"] == records["size"]).all()  # recorded, item by item


BAD_OPTIONS = [
    ("run", ["--sizes", "0"], "--sizes: must be ≥ 1"),
    ("run", ["--sizes", "x"], "--sizes"),
    ("run", ["--repeats", "-1"], "--repeats: must be ≥ 1"),
    ("run", ["--workers", "0"], "--workers: must be ≥ 1"),
    ("run", ["--out", ""], "--out: must name a folder"),
    ("overhead", ["--items", "0"], "--items: must be ≥ 1"),
    ("overhead", ["--repeats", "nan"], "--repeats"),
    ("overhead", ["--plots", " "], "--plots: must name a folder"),
    ("advise", ["--items", "-5", "--item-ms", "1"], "--items: must be ≥ 1"),
    ("advise", ["--items", "5", "--item-ms", "inf"], "--item-ms: must be a finite number"),
    ("advise", ["--items", "5", "--item-ms", "-1"], "--item-ms: must be ≥ 0"),
    ("advise", ["--items", "5", "--item-ms", "1", "--wait-ms", "nan"], "--wait-ms"),
    ("advise", ["--items", "5", "--item-ms", "1", "--item-kb", "-2"], "--item-kb: must be ≥ 0"),
    ("advise", ["--items", "5", "--item-ms", "1", "--workers", "-4"], "--workers: must be ≥ 1"),
    ("advise", ["--items", "5", "--item-ms", "1", "--latency-ms", "-1000"], "--latency-ms"),
    ("advise", ["--items", "5", "--item-ms", "1", "--bandwidth-mbps", "0"], "must be > 0"),
    ("advise", ["--items", "5", "--item-ms", "1", "--bandwidth-mbps", "-5"], "must be > 0"),
    ("advise", ["--items", "5", "--item-ms", "1", "--sample", "1"], "--sample: must be ≥ 2"),
    ("make-images", ["d", "--count", "0"], "--count: must be ≥ 1"),
    ("make-images", ["d", "--seed", "-1"], "--seed: must be ≥ 0"),
    ("bench overhead", ["--items", "0"], "--items: must be ≥ 1"),
    ("bench kernels", ["--side", "0"], "--side: must be ≥ 1"),
    ("bench api", ["--latency-ms", "-1"], "--latency-ms: must be ≥ 0"),
    ("bench api", ["--concurrency", "0"], "--concurrency: must be ≥ 1"),
    ("bench tasks", ["--scale", "0"], "--scale: must be > 0"),
    ("bench tasks", ["--colds", "0"], "--colds: must be ≥ 1"),
    ("serve-api", ["--latency-ms", "-1"], "--latency-ms must be"),
    ("serve-api", ["--latency-ms", "nan"], "--latency-ms must be"),
    ("serve-api", ["--jitter-ms", "-5"], "--jitter-ms must be"),
    ("serve-api", ["--error-rate", "2"], "--error-rate must be from 0 to 1"),
    ("serve-api", ["--malformed-rate", "5"], "--malformed-rate must be from 0 to 1"),
    ("serve-api", ["--rate-limit", "-3"], "--rate-limit must be ≥ 0"),
    ("serve-api", ["--port", "70000"], "--port must be from 0 to 65535"),
]


@pytest.mark.parametrize(("command", "args", "message"), BAD_OPTIONS)
def test_a_bad_option_value_is_one_line_and_exit_2(command, args, message, tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "smallbig", *command.split(), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    said = (out.stdout + out.stderr).strip()
    assert out.returncode == 2, said
    assert message in said and len(said.splitlines()) == 1, said
    assert list(tmp_path.iterdir()) == []  # nothing was started or written


def test_the_python_api_checks_the_same_values():
    from smallbig.model.costmodel import predict

    profile = {"cpu_count": 2, "backends": {}}
    for kwargs, message in [
        ({"items": 0, "item_s": 0.001}, "items must be ≥ 1"),
        ({"items": 5, "item_s": float("inf")}, "item_s must be a finite number"),
        ({"items": 5, "item_s": -1.0}, "item_s must be ≥ 0"),
        ({"items": 5, "item_s": 0.001, "workers": -4}, "workers must be ≥ 1"),
        ({"items": 5, "item_s": 0.001, "latency_s": -1.0}, "latency_s must be ≥ 0"),
        ({"items": 5, "item_s": 0.001, "bandwidth_Bps": 0}, "bandwidth_Bps must be > 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            predict(profile, **kwargs)
    with pytest.raises(ValueError, match="profile must be a calibration"):
        predict({}, 5, 0.001)


def test_the_api_server_rejects_bad_input_in_one_line(tmp_path):
    import socket
    import subprocess
    import sys

    import urllib3

    from smallbig.workloads.weather_server import Faults

    with pytest.raises(ValueError, match="latency_s"):
        Faults(latency_s=float("nan"))
    with pytest.raises(ValueError, match="error_rate"):
        Faults(error_rate=2)
    cmd = [sys.executable, "-m", "smallbig", "serve-api"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        port = int(url.rsplit(":", 1)[1])
        # The port is taken now: a second server says so in one line.
        busy = subprocess.run([*cmd, "--port", str(port)], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
        assert len(busy.stderr.strip().splitlines()) == 1, busy.stderr
        r = urllib3.request("GET", f"{url}/v1/environment/rainfall", fields={"date": "20240101"})
        assert r.status == 400 and b"YYYY-MM-DD" in r.data
        for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(raw)
                assert sock.recv(100).startswith(b"HTTP/1.")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err and "Error handling request from 127.0.0.1: 400" in err, err


def test_a_partial_request_is_closed_after_the_idle_timeout():
    import socket
    import time

    from smallbig.workloads.weather_server import serve_api

    with serve_api(idle_timeout_s=1.0) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /v1/environment/rainfall HTTP/1.1\r\nHost: x\r\n")  # no end
            start = time.monotonic()
            assert sock.recv(100) == b""  # closed by the server, not by our 10 s timeout
            assert 0.9 < time.monotonic() - start < 5
