"""Everything shipped is consistent: example sweeps validate, imports are light, registries are sane."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.core.registry import Registry
from harness.sweep import expand, load_sweep
from methods.base import METHODS, MethodConfig
from tasks.base import TASKS

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted(ROOT.joinpath("examples").glob("*.yaml"))
BENCHMARKS = sorted(ROOT.joinpath("benchmarks").glob("*.yaml"))
# The tasks that check their shared data folders while a sweep validates (the others look at run time).
VALIDATED_DATA = {"babilong": ("babilong", "books"), "autoencode": ("books",)}


def _sweep(path: Path):
    tasks = {task["name"] for task in yaml.safe_load(path.read_text(encoding="utf-8"))["tasks"]}
    folders = sorted({folder for task in tasks & VALIDATED_DATA.keys() for folder in VALIDATED_DATA[task]})
    return pytest.param(path, marks=pytest.mark.data(*folders), id=f"{path.parent.name}/{path.name}")


@pytest.mark.parametrize("path", sorted(ROOT.joinpath("benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmark_scripts_import(path, monkeypatch):
    """Every benchmark script imports (its work waits for `__main__`): a renamed lch name breaks it here first."""
    monkeypatch.syspath_prepend(str(path.parent))  # the scripts import their siblings, as when run from there
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.mark.parametrize("path", [_sweep(path) for path in EXAMPLES + BENCHMARKS])
def test_sweeps_validate(path, tmp_path, monkeypatch):
    """Every sweep file validates, run from the repository root (its paths are relative to it).

    A checkpoint its recipe has not made yet (`docs/comparison/train.sh`, a benchmark's training command)
    is an empty folder here, which a method takes as it is, so everything else in the file is checked.
    """
    monkeypatch.chdir(ROOT)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for method in data["methods"]:
        checkpoint = method.get("options", {}).get("checkpoint")
        if checkpoint and not Path(checkpoint).is_dir():
            stub = tmp_path / checkpoint.replace("/", "_")
            stub.mkdir()
            method["options"]["checkpoint"] = str(stub)
    stubbed = tmp_path / path.name
    stubbed.write_text(yaml.safe_dump(data))
    assert expand(load_sweep(stubbed))


@pytest.mark.data("babilong", "books")
def test_the_committed_comparison_holds_every_cell_of_its_sweep(monkeypatch):
    """`lch run examples/compare.yaml` on a fresh clone finds every cell done: an option added to a method
    without `later_options` would change the cell ids and silently rerun hours of cells."""
    from contextlib import closing

    from harness.store import open_existing

    monkeypatch.chdir(ROOT)
    spec = load_sweep("examples/compare.yaml")
    with closing(open_existing(spec.output)) as store:  # closed even when the query fails
        status = dict(store.execute("SELECT cell_id, status FROM cells"))
    missing = [f"{c.label} {c.task}@{c.length}" for c in expand(spec) if status.get(c.cell_id) != "done"]
    assert not missing


def test_the_demo_runs_from_a_fresh_clone_on_the_embedded_model(monkeypatch):
    """The README's first command: quick.yaml needs nothing but what ships (its checkpoints included)."""
    monkeypatch.chdir(ROOT)
    cells = expand(load_sweep(ROOT / "examples" / "quick.yaml"))
    assert {cell.model for cell in cells} == {"smollm2-135m"}
    assert any(cell.checkpoints for cell in cells)  # it shows trained methods


def test_package_imports_do_not_load_torch():
    code = "import sys, harness, methods, tasks, reports; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", METHODS.names())
def test_methods_declare_config_and_description(name):
    cls = METHODS.get(name)
    assert issubclass(cls.Config, MethodConfig) and cls.Config.__doc__ and cls.description
    cls.Config()  # the official defaults are valid


@pytest.mark.parametrize("name", TASKS.names())
def test_tasks_declare_headline_and_description(name):
    cls = TASKS.get(name)
    assert cls.headline and cls.description and cls.Config.__doc__


def test_registry_rejects_duplicates_and_wrong_bases():
    registry = Registry("thing", int, ())
    registry.register("a")(type("One", (int,), {}))
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(type("Other", (int,), {}))
    with pytest.raises(TypeError, match="must subclass int"):
        registry.register("b")(str)


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_documentation_links_point_at_files_that_exist(page):
    import re

    for target in re.findall(r"\]\(([^)#]+)\)", page.read_text(encoding="utf-8")):
        if not target.startswith(("http://", "https://")):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_readme_stays_a_short_front_door():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 150


def _lch_imports(path: Path) -> set[str]:
    """The lch modules a file imports (`harness.core.errors`, `methods.base`, ...), top level or inside functions."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {name for name in names if name.split(".")[0] in ("harness", "methods", "tasks", "reports")}
    return found


# The one bridge allowed: the `lm-eval` task runs lm-eval's documents through lch's lm-eval model.
LAYER_EXCEPTIONS = {("tasks/lm_eval_task.py", "harness.lm_eval.adapter")}


def test_arrows_run_one_way():
    """The foundation imports nothing else of lch; methods and tasks import the foundation, never the engine."""
    for path in sorted((ROOT / "harness" / "core").glob("*.py")):
        outside = {name for name in _lch_imports(path) if not name.startswith("harness.core")}
        assert not outside, f"{path.relative_to(ROOT)} imports {sorted(outside)}"
    for layer in ("methods", "tasks"):
        for path in sorted((ROOT / layer).rglob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            engine = {name for name in _lch_imports(path) if name.startswith("harness") and
                      not name.startswith("harness.core") and (where, name) not in LAYER_EXCEPTIONS}  # fmt: skip
            assert not engine, f"{where} imports the engine: {sorted(engine)}"


def test_no_two_engine_modules_import_each_other():
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (ROOT / "harness").rglob("*.py")}  # fmt: skip
    imports = {name: {m for m in _lch_imports(path) if m in modules} for name, path in modules.items()}
    circles = sorted((a, b) for a in imports for b in imports[a] if a < b and a in imports.get(b, ()))
    assert not circles, f"modules importing each other: {circles}"
