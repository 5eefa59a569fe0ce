"""How functions reach the workers: by reference where the workers import them, else by value.

The package here lives in a temporary folder outside the project and outside the driver's
current directory, and only the driver's ``sys.path`` finds it: the common layout of a
data-science repository (``sys.path.insert(0, "../src")`` in a notebook or script).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from smallbig.backends import available, shipping

PACKAGE = {
    "__init__.py": "",
    "clean.py": """
        from extpkg import helpers

        OFFSET = 1


        def _scale(x):
            return 3 * x


        def clean(x):
            return _scale(x) + OFFSET


        def via_other_module(x):
            return helpers.double(x) + OFFSET
        """,
    "helpers.py": """
        def double(x):
            return 2 * x
        """,
}


def _write_package(root: Path) -> Path:
    package = root / "src" / "extpkg"
    package.mkdir(parents=True)
    for name, text in PACKAGE.items():
        (package / name).write_text(textwrap.dedent(text))
    return root / "src"


def test_the_decision_follows_the_file_not_the_name(tmp_path, monkeypatch):
    src = _write_package(tmp_path)
    monkeypatch.syspath_prepend(str(src))
    import extpkg.clean

    try:
        assert not shipping.importable_by_workers("extpkg.clean")
        assert not shipping.by_reference(extpkg.clean.clean)
        # What a fresh interpreter imports from the same file travels by reference: the
        # standard library, site-packages, this project's editable install.
        import json as stdlib_json

        from smallbig.workloads import probes

        assert shipping.importable_by_workers(stdlib_json.__name__)
        assert shipping.importable_by_workers("numpy") or "numpy" not in sys.modules
        assert shipping.by_reference(probes.noop) and shipping.by_reference(len)
        assert not shipping.by_reference(lambda x: x)
        # By value carries the module-level helpers, from this module and from its sibling.
        import cloudpickle

        for fn, expected in ((extpkg.clean.clean, 10), (extpkg.clean.via_other_module, 7)):
            shipped = shipping.portable(fn)
            assert isinstance(shipped, shipping.ByValue)
            assert cloudpickle.loads(shipped.payload)(3) == expected
        assert not cloudpickle.list_registry_pickle_by_value()  # registrations undone
    finally:
        _forget("extpkg")


def _forget(package: str) -> None:
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]


def test_same_name_from_another_folder_is_not_the_workers_module(tmp_path, monkeypatch):
    # Two copies of one package: the workers' (on PYTHONPATH, which they inherit) and one
    # that only the driver's sys.path finds. Only the first travels by reference.
    for side in ("theirs", "mine"):
        (tmp_path / side / "twin").mkdir(parents=True)
        (tmp_path / side / "twin" / "__init__.py").write_text(f"WHERE = {side!r}\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "theirs"))
    shipping.refresh()
    try:
        for side, expected in (("mine", False), ("theirs", True)):
            monkeypatch.syspath_prepend(str(tmp_path / side))
            import twin

            found = twin.WHERE
            assert found == side
            assert shipping.importable_by_workers("twin") is expected, side
            _forget("twin")
    finally:
        _forget("twin")
        monkeypatch.undo()
        shipping.refresh()


DRIVER = """
import contextlib
import json
import sys

sys.path.insert(0, {src!r})  # the driver's own path: the workers never see this folder

import smallbig
from smallbig.backends import get_backend
from smallbig import cli
from extpkg.clean import clean, via_other_module


def main():
    specs = {specs!r}
    got = {{}}
    # One Ray runtime for every step: each Ray backend below finds it and reuses it.
    with get_backend("ray", workers=2) if "ray" in specs else contextlib.nullcontext():
        for spec in specs:
            with get_backend(spec, workers=None if spec == "serial" else 2) as ex:
                got[spec] = [
                    ex.submit(clean, 3).result(timeout=120),
                    list(ex.map(clean, range(8))),
                    list(ex.map(via_other_module, range(8), chunksize="auto")),
                    list(ex.map(clean, range(8), chunksize=3)),
                ]
        profile = smallbig.profile_task(via_other_module, range(17))
        got["profile"] = [profile.item_s > 0, profile.errors]
        task = "extpkg.clean:via_other_module"
        # The command line's path to the workers, on a pool and on a cluster that cannot
        # see the driver's folders (every backend ran the task above; a run of each would
        # calibrate each, a minute of this test).
        ran = [s for s in specs if s in ("serial", "processes") or "@" in s]
        got["ran"] = ran
        got["run"] = cli.main([
            "run", "--task", task, "--items-from", "range:6", "--backends", *ran,
            "--sizes", "6", "--repeats", "1", "--out", "out",
        ])
        got["advise"] = cli.main([
            "advise", "--task", task, "--items-from", "range:6", "--items", "1000",
            "--profile", "out/calibration.json",
        ])
    print("RESULT " + json.dumps(got))


if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
@pytest.mark.cluster
def test_a_package_only_on_the_drivers_path_runs_on_every_backend(dask_address):
    root = Path(tempfile.mkdtemp(prefix="smallbig-extpkg-"))
    try:
        src = _write_package(root)
        workdir = root / "work"  # the driver's current directory: not where the package is
        workdir.mkdir()
        address = dask_address  # the session's separately started cluster (conftest.py)
        specs = [*available(), *([f"dask@{address}"] if "dask" in available() else [])]
        (workdir / "driver.py").write_text(DRIVER.format(src=str(src), specs=specs))
        out = subprocess.run(
            [sys.executable, "driver.py"],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
        got = json.loads(line.removeprefix("RESULT "))
        expected = [10, [3 * i + 1 for i in range(8)], [2 * i + 1 for i in range(8)]]
        expected.append(expected[1])
        for spec in specs:
            assert got[spec] == expected, spec
        assert got["profile"] == [True, 0]
        assert got["run"] == 0 and got["advise"] == 0, out.stdout[-3000:]
        records = pd.read_csv(workdir / "out" / "records.csv")
        assert set(records["backend"]) == set(got["ran"]) and len(got["ran"]) == 3
        assert records["correct"].all() and (records["errors"] == 0).all()
        assert "measured on" in out.stdout
        # Nothing was installed or copied: the package is still only where we wrote it.
        project = Path(__file__).resolve().parents[1]
        assert not list(project.rglob("extpkg"))
        check = subprocess.run(
            [sys.executable, "-c", "import extpkg"], cwd=workdir, capture_output=True
        )
        assert check.returncode != 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


TEST_MODULE = """
    import pytest

    from smallbig import backends

    SPECS = {specs!r}


    def mul(x, y):
        return x * y


    class Scaler:
        def __init__(self, factor):
            self.factor = factor

        def scale(self, x):
            return self.factor * x


    @pytest.mark.parametrize("spec", SPECS)
    def test_submit_and_map(spec):
        with backends.get_backend(spec, workers=2) as ex:
            assert ex.submit(mul, 2, y=8).result(timeout=120) == 16
            assert list(ex.map(mul, range(5), range(5), chunksize=2)) == [0, 1, 4, 9, 16]
            assert list(ex.map(Scaler(3).scale, [1, 2])) == [3, 6]
"""


@pytest.mark.slow
def test_a_function_of_a_pytest_test_module_runs_on_every_worker_backend(tmp_path):
    """A test file anywhere, run by plain ``pytest`` from another folder: pytest finds its
    module through an import hook of its own (assertion rewriting) that no worker has, so its
    functions must travel by value (a worker told to import ``test_elsewhere`` cannot)."""
    specs = [name for name in available() if not backends_in_process(name)]
    assert specs, "no process or cluster backend installed"
    where = tmp_path / "elsewhere"
    where.mkdir()
    (where / "test_elsewhere.py").write_text(textwrap.dedent(TEST_MODULE.format(specs=specs)))
    other = tmp_path / "other"
    other.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(where)],
        cwd=other,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert f"{len(specs)} passed" in run.stdout


def backends_in_process(name: str) -> bool:
    from smallbig.backends import backend_class

    return backend_class(name).in_process
