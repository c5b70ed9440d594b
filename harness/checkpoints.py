"""A checkpoint evaluates by itself: the options it was trained with come from its `training.json`.

`lch train` writes `training.json` (the `TrainSpec`: method name and the options given) beside the
weights. When a sweep or `lch eval` names a checkpoint, every option of the method's
`Config.checkpoint_options` that the user left out is taken from there, and one that contradicts it
is a one-line error: evaluating a checkpoint with other shapes or scales than it was trained with
is never what a user means. A folder without `training.json` (written by `save()` alone) is taken as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.core.checkpoint_files import LOG_FILE, RESOLVED_KEY, SEEN_KEY, SPEC_FILE, read_spec
from harness.core.errors import UserError
from harness.core.validation import validate


def with_checkpoint_options(cls, options: dict[str, Any], where: str) -> dict[str, Any]:
    """`options` completed with what each named checkpoint was trained with.

    Args:
        cls: the registered method class (its `name` and `Config`).
        options: the options the user gave.
        where: prefix of error messages (`method 'uio'`).

    Raises:
        UserError: a checkpoint was trained for another method, or an option contradicts it.
    """
    config_cls = cls.Config
    merged = dict(options)
    for field in config_cls.checkpoint_fields:
        directory = options.get(field)
        if not isinstance(directory, str) or not directory.strip() or not Path(directory).is_dir():
            continue  # the config's own validator words a missing, empty or file-valued checkpoint
        spec = read_spec(directory)
        if spec is None:
            continue
        # the options as trained (defaults and training-time choices resolved) over the options given to `lch train`
        method, stored = spec.get("method"), {**spec.get("method_options", {}), **spec.get(RESOLVED_KEY, {})}
        if method != cls.name:
            raise UserError(f"{where}: checkpoint '{directory}' was trained for method '{method}', not '{cls.name}'")
        fixed = {key: value for key, value in stored.items() if key in config_cls.checkpoint_options}
        trained = validate(config_cls, fixed, f"{where}: checkpoint '{directory}'")
        given = validate(config_cls, {**fixed, **options}, where)
        for key in config_cls.checkpoint_options:
            if key in options and getattr(given, key) != getattr(trained, key):
                raise UserError(
                    f"{where}: {key}={options[key]} contradicts checkpoint '{directory}', trained with "
                    f"{key}={getattr(trained, key)} ({SPEC_FILE}); leave {key} out to use it"
                )
        merged = {**fixed, **merged}
    return merged


def method_config(cls, options: dict[str, Any], where: str):
    """`cls.Config` validated from the options given, completed with what each named checkpoint was trained with."""
    return validate(cls.Config, with_checkpoint_options(cls, options, where), where)


def training_budget(directory: str) -> dict[str, Any]:
    """What a checkpoint was trained on, comparable across methods: data, documents' lengths, steps, tokens.

    `stages` is the plan; `steps`, `tokens` (every document of every step, over all processes) and
    `longest_document` count what the weights saw: `seen` in `training.json` (written with the weights,
    hashed with them), else the loss log, else the plan (a folder from before either was written). A run
    stopped early counts its steps, not its plan. Empty without a readable `training.json`.
    """
    try:
        spec = read_spec(directory) or {}
    except UserError:
        return {}
    stages = spec.get("stages") or ([{"seq_len": spec["seq_len"], "steps": spec["steps"]}] if spec.get("steps") else [])
    if not stages:
        return {}
    per_step = spec.get("accumulation", 1)
    rows = _logged_steps(Path(directory) / LOG_FILE) or [
        {"seq_len": stage["seq_len"], "documents": per_step} for stage in stages for _ in range(stage["steps"])
    ]
    seen = spec.get(SEEN_KEY) if isinstance(spec.get(SEEN_KEY), dict) else steps_seen(rows, per_step)
    return {
        "data": spec.get("data"),
        "stages": ",".join(f"{stage['seq_len']}:{stage['steps']}" for stage in stages),
        "steps": seen["steps"],
        "tokens": seen["tokens"],
        "longest_document": max(row["seq_len"] for row in rows),
        "seed": spec.get("seed"),
    }


def steps_seen(rows: list[dict[str, Any]], documents_per_step: int) -> dict[str, int]:
    """Steps, documents and tokens of loss-log rows (`seen`).

    A row logged before rows counted their documents took `documents_per_step`; one logged before rows
    counted their tokens (every document then had the stage's length) took `seq_len` per document.
    """
    documents = [row.get("documents", documents_per_step) for row in rows]
    tokens = sum(row.get("tokens", row["seq_len"] * n) for row, n in zip(rows, documents, strict=True))
    return {"steps": len(rows), "documents": sum(documents), "tokens": tokens}


def _logged_steps(path: Path) -> list[dict[str, Any]]:
    """The rows of a loss log (one per step); empty when there is none or it is unreadable."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    return rows if all(isinstance(row, dict) and isinstance(row.get("seq_len"), int) for row in rows) else []
