"""Sweep files: a validated spec (pydantic) and its expansion into cells (method x task x length)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationInfo,
    field_validator,
)

from harness.checkpoints import method_config, training_budget
from harness.core.errors import UserError
from harness.core.validation import validate
from harness.models import DEFAULT_MODEL
from harness.models import check_device as check_local_device


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MethodSpec(_Strict):
    """A method with its options; `label` names it in results (default: the name, plus options if repeated).

    `control` (a label of the sweep) names the method's no-memory control: the same local context without
    its memory. Reports set the two side by side token by token (`reports.memory_gain`); it is not part of
    the cells' identity.
    """

    name: str
    label: str | None = None
    options: dict[str, Any] = {}
    control: str | None = None


class TaskSpec(_Strict):
    """A task with its options, the lengths (in tokens) to run, and an optional per-task sample count.

    `lengths` may be left out for tasks that declare `default_lengths` (LongBench's truncation budget).
    `methods` (labels) limits the task to some methods: 100K tokens only for the linear-cost ones.
    """

    name: str
    options: dict[str, Any] = {}
    lengths: list[NonNegativeInt] | None = Field(default=None, min_length=1)
    samples: PositiveInt | None = None
    methods: list[str] | None = Field(default=None, min_length=1)


class SweepSpec(_Strict):
    """What `lch run` reads from YAML. Every method runs every task at every length, unless the task names methods."""

    model: str = DEFAULT_MODEL
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    seed: int = 0
    samples: PositiveInt = 5
    output: str = "results/lch.sqlite"
    flops: bool = False
    gpus_per_cell: float = Field(default=0, ge=0)  # what each Ray worker asks for (`--executor ray`); 0.5 shares a GPU
    methods: list[MethodSpec] = Field(min_length=1)
    tasks: list[TaskSpec] = Field(min_length=1)

    @field_validator("gpus_per_cell")
    @classmethod
    def _gpus_fit_the_device(cls, gpus: float, info: ValidationInfo) -> float:
        if gpus > 1 and gpus != int(gpus):
            raise ValueError(f"more than one GPU per cell must be a whole number, got {gpus}")  # Ray's rule
        if gpus and info.data.get("device") == "cpu":
            raise ValueError(f"{gpus:g} GPUs per cell, but the sweep runs on device 'cpu': set device: cuda")
        return gpus


@dataclass(frozen=True)
class Cell:
    """One unit of work: a configured method on a configured task at one length."""

    label: str
    method: str
    method_config: Any
    task: str
    task_config: Any
    task_version: int
    headline: str
    length: int
    samples: int
    seed: int
    model: str
    dtype: str
    device: str
    # checkpoint field -> {"sha256": `checkpoint_sha256`, "budget": `training_budget`}
    checkpoints: dict[str, dict] = field(default_factory=dict)

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that determines the results, hashed into `cell_id`.

        The sample count is left out: asking for more samples extends a cell. A checkpoint directory
        (a field in the config's `checkpoint_fields`) appears as `{"path": ..., "sha256": ..., "budget": ...}`,
        the budget being what it was trained on (reports compare methods' budgets).
        """
        method_config = _identity_of(self.method_config)
        for name, checkpoint in self.checkpoints.items():
            method_config[name] = {"path": method_config[name], **checkpoint}
        return {
            "model": self.model, "dtype": self.dtype, "device": self.device,
            "method": self.method, "method_config": method_config,
            "task": self.task, "task_version": self.task_version,
            "task_config": _identity_of(self.task_config),
            "length": self.length, "seed": self.seed,
        }  # fmt: skip

    @property
    def cell_id(self) -> str:
        """Stable hash of `identity` without checkpoint paths and budgets.

        A checkpoint counts by its contents: retrained into the same folder it makes new cells, moved or
        copied elsewhere it resumes the old ones (the path stays in `identity`, stored for provenance).
        The budget is provenance, not identity: the contents (weights, `training.json`) decide the cell.
        """
        identity = self.identity
        for name in self.checkpoints:
            del identity["method_config"][name]["path"], identity["method_config"][name]["budget"]
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


CHECKPOINT_SUFFIXES = (".safetensors", ".json")


def _identity_of(config) -> dict[str, Any]:
    """A method or task config as a cell's identity holds it: options added later are left out at their default.

    Their default computes what the code did before the option existed, so stores written then resume.
    """
    values = config.model_dump(mode="json")
    fields = type(config).model_fields
    for name in getattr(type(config), "later_options", ()):
        if values.get(name) == fields[name].default:
            del values[name]
    return values


def checkpoint_sha256(directory: str) -> str:
    """sha256 over a checkpoint's safetensors and json files: each one's relative name and sha256, sorted by name.

    Other files (optimizer state, training logs) do not change what the method computes.
    """
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"checkpoint '{directory}' is not a directory")
    files = {
        p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES and p.is_file()
    }
    digest = hashlib.sha256()
    for name in sorted(files):
        with files[name].open("rb") as handle:
            digest.update(f"{name}\0{hashlib.file_digest(handle, 'sha256').hexdigest()}\n".encode())
    return digest.hexdigest()


def load_sweep(path: str | Path, output: str | None = None) -> SweepSpec:
    """Read and validate a sweep YAML file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"sweep file '{path}' is a directory")
    if not path.is_file():
        raise UserError(f"sweep file '{path}' not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"sweep file '{path}' is not UTF-8 text") from None
    except yaml.YAMLError as error:
        raise UserError(f"sweep file '{path}' is not valid YAML{_yaml_where(error)}") from None
    if not isinstance(data, dict):
        raise UserError(f"sweep file '{path}' must be a mapping with 'methods' and 'tasks'")
    if output:
        data["output"] = output
    return validate(SweepSpec, data, str(path))


def _yaml_where(error: yaml.YAMLError) -> str:
    """` at line L, column C: problem` from a PyYAML error (its marks count from 0), or its first line."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or problem is None:
        return ": " + str(error).splitlines()[0]
    return f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def method_labels(spec: SweepSpec) -> list[str]:
    """Each method's label in results, in the sweep's order.

    Its `label`, else its name, plus its options when the name repeats (the plain one keeps its name).
    """
    repeated = {m.name for m in spec.methods if sum(o.name == m.name for o in spec.methods) > 1}
    labels = []
    for method in spec.methods:
        label = method.label or method.name
        if method.label is None and method.name in repeated and method.options:
            label += "(" + ",".join(f"{k}={v}" for k, v in sorted(method.options.items())) + ")"
        labels.append(label)
    return labels


def expand(spec: SweepSpec, check_device: bool = True) -> list[Cell]:
    """Cells in run order (task, then length, then method).

    Every name, option, task data path and (unless `check_device` is false: the cells run on other
    machines) the device is validated first, so a bad input stops before anything is loaded or stored;
    checkpoint directories are hashed once per method.
    """
    from methods.base import METHODS
    from tasks.base import TASKS

    if check_device:
        check_local_device(spec.device)
    methods = []
    labels = method_labels(spec)
    if len(set(labels)) != len(labels):
        raise UserError(f"method labels must be unique, got {labels}")
    for method, label in zip(spec.methods, labels, strict=True):
        if method.control is not None and (method.control == label or method.control not in labels):
            others = ", ".join(other for other in labels if other != label)
            raise UserError(f"method '{label}': control '{method.control}' is not another method of the sweep. "
                            f"Valid: {others}")  # fmt: skip
        cls = METHODS.get(method.name)
        where = f"method '{label}'" if label == method.name else f"method '{label}' ({method.name})"
        config = method_config(cls, method.options, where)
        checkpoints = {
            name: {"sha256": checkpoint_sha256(directory), "budget": training_budget(directory)}
            for name in config.checkpoint_fields
            if (directory := getattr(config, name)) is not None
        }
        methods.append((label, method.name, config, checkpoints))
    cells = []
    for task in spec.tasks:
        unknown = sorted(set(task.methods or ()) - set(labels))
        if unknown:
            raise UserError(f"task '{task.name}': methods {unknown} are not in the sweep. Valid: {', '.join(labels)}")
        task_cls = TASKS.get(task.name)
        task_config = validate(task_cls.Config, task.options, f"task '{task.name}'")
        task_cls.check_config(task_config)
        lengths = task.lengths or list(task_cls.default_lengths)
        if not lengths:
            raise UserError(f"task '{task.name}' needs lengths (--lengths 4096,8192 or 'lengths:' in the sweep)")
        if 0 in lengths and task_cls.length_zero is None:
            zero = ", ".join(name for name in TASKS.names() if TASKS.get(name).length_zero)
            raise UserError(f"task '{task.name}' has no length 0: lengths start at 1 (tasks with a length 0: {zero})")
        for length in lengths:
            for label, name, config, checkpoints in methods:
                if task.methods and label not in task.methods:
                    continue
                task_cls.check_method(task_config, METHODS.get(name), config, length)
                cells.append(
                    Cell(
                        label=label, method=name, method_config=config, task=task.name, task_config=task_config,
                        task_version=task_cls.version, headline=task_cls.headline, length=length,
                        samples=task.samples or spec.samples, seed=spec.seed, model=spec.model, dtype=spec.dtype,
                        device=spec.device, checkpoints=checkpoints,
                    )
                )  # fmt: skip
    return cells
