"""What happens when things go wrong: cut records, refused folders, corrupt files."""

from __future__ import annotations

import json
import warnings

import pytest

from compare.calibrate import load_profile
from compare.records import FIELDS, RecordWriter, load_records, read_metadata
from compare.runner import run


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
        )
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
    )
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
    from compare.records import write_json

    write_json(tmp_path / "x.json", {"a": 1})
    write_json(tmp_path / "x.json", {"a": 2})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left


def test_no_warning_on_a_clean_resume(measured, tmp_path):
    (tmp_path / "records.csv").write_bytes((measured / "records.csv").read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RecordWriter(tmp_path, resume=True).close()
