"""Packaging stays consistent: conda and pip install the same things; CI runs the README."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names the same packages a little differently.
CONDA_NAMES = {"dask": {"dask", "distributed"}, "ray": {"ray-core"}}


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
    assert project["optional-dependencies"]["all"] == ["smallbig[dask,ray,notebooks]"]


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    assert commands[0] == 'pip install -e ".[all]" && smallbig run'
    assert commands[1] == 'pip install -e ".[all,test]" && pytest'
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci


def test_the_extras_install_a_notebook_front_end():
    import shutil
    import subprocess

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "jupyterlab" in {_name(r) for r in project["optional-dependencies"]["notebooks"]}
    jupyter = shutil.which("jupyter")
    assert jupyter, "the notebooks extra installs jupyter"
    out = subprocess.run([jupyter, "lab", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip()[0].isdigit(), out.stderr
