"""The layout: one direction of dependence, no import cycle, any import order, and a backend
added by registering it alone — compare/ decides by capabilities, never by name."""

from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from pathlib import Path

from smallbig.backends import BACKENDS, Entry, available, capabilities
from smallbig.cli import main
from smallbig.results.records import load_records

ROOT = Path(__file__).resolve().parents[1]
# Installed names: the repository's folders are smallbig's packages (pyproject's package-dir).
FOLDERS = {"compare": "smallbig", "backends": "smallbig.backends", "workloads":
"smallbig.workloads"}
# What each package may import of smallbig, as README's layout states: a package builds only on
# those before it. The names are prefixes: "smallbig.backends" covers its emulation harness.
_BASE = {"smallbig.backends", "smallbig.workloads"}
MAY_IMPORT = {
    "smallbig.workloads": {"smallbig.workloads"},
    "smallbig.backends": {"smallbig.backends"},
    "smallbig.results": {"smallbig.results", *_BASE},
    "smallbig.model": {"smallbig.results", "smallbig.model", *_BASE},
    "smallbig.present": {"smallbig.results", "smallbig.model", "smallbig.present", *_BASE},
    "smallbig.running": {"smallbig.results", "smallbig.model", "smallbig.present",
                         "smallbig.running", *_BASE},
    "smallbig.bench": {"smallbig.results", "smallbig.model", "smallbig.present",
                       "smallbig.running", "smallbig.bench", *_BASE},
}


def _modules() -> dict[str, Path]:
    """Every module of smallbig, by its installed name."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[0] in ("backends", "workloads") and folder == "compare":
                continue
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def _package(name: str) -> str:
    """The package of ``name`` that the layering rules speak of (the longest that has rules)."""
    return max((p for p in MAY_IMPORT if name == p or name.startswith(p + ".")), key=len,
               default="smallbig")


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the three packages that ``path`` imports anywhere (functions included),
    except under ``if TYPE_CHECKING:``, which never runs."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    deps = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                deps.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            deps |= {alias.name for alias in node.names}
    return {d for d in deps if d in modules}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_and_one_direction_of_dependence():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)
    for name, deps in graph.items():
        allowed = MAY_IMPORT.get(_package(name))
        if allowed is None:  # smallbig itself, its __main__ and the command line: anything
            continue
        wrong = {d for d in deps if not any(d == a or d.startswith(a + ".") for a in allowed)}
        assert not wrong, f"{name} may import only {sorted(allowed)}, imports {sorted(wrong)}"


def test_no_module_is_imported_by_a_name_of_the_repository_folder():
    """``import backends`` would load a second copy of smallbig.backends (from the checkout,
    where the folder is on the path): every import says smallbig."""
    for path in [*ROOT.joinpath("tests").glob("*.py"), *_modules().values()]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and not node.level else [])  # fmt: skip
            bad = [n for n in names if n.split(".")[0] in FOLDERS]
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}: say smallbig.…"


def test_the_emulation_harness_is_not_imported_by_an_adapter_at_import_time():
    """An adapter that needs the harness (namespaces, CPU groups) imports it where it uses it:
    starting a local Ray loads no netns code."""
    for name, path in _modules().items():
        if not name.startswith("smallbig.backends.") or ".emulation" in name:
            continue
        top = [n for n in ast.parse(path.read_text()).body
               if isinstance(n, ast.ImportFrom) and (n.module or "").startswith(
                   "smallbig.backends.emulation")]  # fmt: skip
        assert not top, f"{name} imports the emulation harness at its top level"


def _private_uses(path: Path, modules: dict[str, Path]) -> set[str]:
    """Private names (``_x``) of another of the three packages' modules that ``path`` uses:
    ``from m import _x`` or ``m._x`` on a module bound by ``import m [as y]``."""
    tree = ast.parse(path.read_text())
    bound = {}  # local name -> module, for `import m` and `from pkg import m`
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    bound[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in modules:
                    bound[alias.asname or alias.name] = sub
                elif node.module in modules and alias.name.startswith("_"):
                    found.add(f"{node.module}.{alias.name}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                and node.value.id in bound):  # fmt: skip
            found.add(f"{bound[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_is_used_across_modules(tmp_path):
    modules = _modules()
    for name, path in modules.items():
        assert not _private_uses(path, modules), (name, _private_uses(path, modules))
    # The checker sees both spellings.
    probe = tmp_path / "probe.py"
    probe.write_text("import smallbig.model.fits as f\nfrom smallbig.cli import _x\nf._y\n")
    assert _private_uses(probe, modules) == {"smallbig.cli._x", "smallbig.model.fits._y"}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_imports_in_any_order():
    names = [n for n in _modules() if not n.endswith("__main__")]  # that one runs the CLI
    for seed in range(3):
        order = random.Random(seed).sample(names, len(names))
        code = f"import importlib\nfor m in {order!r}:\n    importlib.import_module(m)\n"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300, cwd=ROOT)  # fmt: skip
        assert done.returncode == 0, (order, done.stderr[-2000:])


def test_a_backend_registered_alone_is_measured_and_reported(monkeypatch, tmp_path):
    # A seventh backend: the thread pool under another name. Nothing in compare/ is edited.
    monkeypatch.setitem(BACKENDS, "pool7", Entry("smallbig.backends.threads", "ThreadsBackend"))
    assert "pool7" in available() and capabilities("pool7")["uses_threads"]
    out = tmp_path / "run"
    argv = ["run", "--workloads", "noop", "--backends", "pool7", "--sizes", "2", "8", "20",
            "--repeats", "1", "--workers", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    records = load_records(out)
    mine = records[records["backend"] == "pool7"]
    assert len(mine) == 3 * 2 and mine["correct"].all()
    profile = json.loads((out / "calibration.json").read_text())["backends"]
    assert profile["pool7"]["in_process"] and profile["pool7"]["auto_overhead_s"] > 0
    assert "pool7" in (out / "report.html").read_text()


def test_import_smallbig_gives_the_public_api_and_a_worker_loads_neither_pandas_nor_rich():
    code = (
        "import sys, smallbig, smallbig.backends, smallbig.workloads.tasks\n"
        "light = not {'pandas', 'rich', 'matplotlib'} & set(sys.modules)\n"
        "api = {n: getattr(smallbig, n) for n in smallbig.__all__}\n"
        "print(light, sorted(api), api['get_backend'] is smallbig.backends.get_backend)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd="/")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    light, names, same = done.stdout.split(" ", 1)[0], done.stdout, done.stdout.split()[-1]
    assert light == "True"  # PEP 562: the API is imported when first asked for
    for name in ("run", "advise", "profile_task", "overhead", "get_backend", "available",
                 "TaskProfile", "RunResult", "Prediction"):  # fmt: skip
        assert f"'{name}'" in names
    assert same == "True"
