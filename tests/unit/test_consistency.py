"""Everything shipped is consistent: example sweeps validate, imports are light, registries are sane."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.registry import Registry
from harness.sweep import expand, load_sweep
from methods.base import METHODS, MethodConfig
from tasks.base import TASKS

EXAMPLES = sorted(Path(__file__).parents[2].joinpath("examples").glob("*.yaml"))
BENCHMARKS = sorted(Path(__file__).parents[2].joinpath("benchmarks").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES + BENCHMARKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sweeps_validate(path):
    """Every sweep file validates; one that evaluates a checkpoint its recipe has not made yet is skipped."""
    try:
        assert expand(load_sweep(path))
    except UserError as error:
        if "checkpoint" in str(error) and "does not exist" in str(error):
            pytest.skip(f"needs a trained checkpoint: {error}")
        raise


def test_the_demo_runs_from_a_fresh_clone_on_the_embedded_model():
    """The README's first command: quick.yaml needs nothing but what ships (its checkpoints included)."""
    cells = expand(load_sweep(Path(__file__).parents[2] / "examples" / "quick.yaml"))
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
