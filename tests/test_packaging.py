"""Packaging stays consistent: conda and pip install the same things; CI runs the README."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from helpers import RUN_COMMAND, TEST_COMMAND

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names the same packages a little differently.
CONDA_NAMES = {
    "dask": {"dask", "distributed"},
    "ray": {"ray-core"},
    "pyspark": {"pyspark", "openjdk"},
}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        if extra != "all":
            reqs += items
    pip_names = {_name(r) for r in reqs}
    expected = set().union(*(CONDA_NAMES.get(n, {n}) for n in pip_names))

    env = (ROOT / "environment.yml").read_text()
    deps = env.split("dependencies:", 1)[1]
    conda = {
        _name(m)
        for m in re.findall(r"^\s+-\s+([A-Za-z][\w.\-]*[^\n]*)$", deps, re.M)
        if not m.startswith(("-e", "pip"))
    } - {"python", "pip"}
    assert conda == expected
    assert re.search(r"-\s*-e\s+\.\[all,test\]", env)
    # "all" is every other extra but the test tools.
    engines = sorted(set(project["optional-dependencies"]) - {"all", "test"})
    (everything,) = project["optional-dependencies"]["all"]
    assert sorted(everything.removeprefix("smallbig[").removesuffix("]").split(",")) == engines


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    assert commands[:2] == [RUN_COMMAND, TEST_COMMAND]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci
    # Under `set -e`, `a && b && c` ends the script only when c fails: the part run in
    # parallel failing must fail CI too, so the line after the command checks its status.
    after = [line for line in ci[ci.index(commands[1]) + 1 :] if not line.startswith("#")]
    assert after[0] == "status=$?" and after[1].startswith('if [ "$status" -ne 0 ]'), after


def test_the_extras_install_a_notebook_front_end():
    import shutil
    import subprocess

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "jupyterlab" in {_name(r) for r in project["optional-dependencies"]["notebooks"]}
    jupyter = shutil.which("jupyter")
    assert jupyter, "the notebooks extra installs jupyter"
    out = subprocess.run([jupyter, "lab", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip()[0].isdigit(), out.stderr


def test_the_readmes_way_of_opening_the_notebooks_serves_them(tmp_path):
    import json
    import shutil
    import socket
    import subprocess
    import time
    import urllib.request

    assert "`jupyter lab notebooks/`" in (ROOT / "README.md").read_text()
    with socket.socket() as s:  # a free port on loopback
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        shutil.which("jupyter"), "lab", "notebooks/", "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        "--IdentityProvider.token=smallbig-test",
        *(["--allow-root"] if __import__("os").geteuid() == 0 else []),  # as the README says
    ]  # fmt: skip
    env = {**__import__("os").environ, "JUPYTER_RUNTIME_DIR": str(tmp_path),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    # The folder given is where the lab opens: its contents are at the root.
    url = f"http://127.0.0.1:{port}/api/contents/?token=smallbig-test"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    listing = json.loads(r.read())
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "lab did not start"
                time.sleep(0.5)
        names = {c["name"] for c in listing["content"]}
        assert {p.name for p in (ROOT / "notebooks").glob("*.ipynb")} <= names
    finally:
        proc.terminate()
        proc.wait(timeout=30)
