"""A checkpoint folder's `training.json`: its file names and keys, reading it, and a config's checkpoint check.

`lch train` writes `training.json` beside the weights; methods read what their weights have seen from it
(`trained_extent`) and validate a checkpoint option (`checked_directory`); `harness.checkpoints` builds the
evaluation's options and the training budget on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.core.errors import UserError

SPEC_FILE = "training.json"
LOG_FILE = "train_log.jsonl"  # one row per step, written with the weights
TRAINED_KEY = "trained"  # in training.json, beside the spec: what the weights have seen so far
RESOLVED_KEY = "checkpoint_options"  # in training.json: the values of Config.checkpoint_options trained with
SEEN_KEY = "seen"  # in training.json: the steps, documents and tokens the weights have trained on


def checked_directory(checkpoint: str | None, what: str) -> str | None:
    """A config validator's answer for a checkpoint field: the directory, or a ValueError that says what is wrong."""
    if checkpoint is None:
        return None
    if not checkpoint.strip():
        raise ValueError(f"{what} checkpoint is empty: name a checkpoint directory, or leave it out (untrained)")
    if Path(checkpoint).is_file():
        raise ValueError(f"{what} checkpoint '{checkpoint}' is a file, not a checkpoint directory")
    if not Path(checkpoint).is_dir():
        raise ValueError(f"{what} checkpoint '{checkpoint}' does not exist")
    return checkpoint


def read_spec(directory: str) -> dict[str, Any] | None:
    """A checkpoint's `training.json` as a dict; None without one, a one-line error when it is not a spec."""
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"checkpoint '{directory}': {SPEC_FILE} is not readable JSON ({error})") from None
    sections = ("method_options", RESOLVED_KEY)
    if not isinstance(spec, dict) or any(not isinstance(spec.get(key, {}), dict) for key in sections):
        raise UserError(f"checkpoint '{directory}': {SPEC_FILE} is not an lch training spec")
    return spec


def trained_extent(directory: str) -> dict[str, Any]:
    """What a checkpoint's weights have seen (`trained` in `training.json`: longest document, most memories).

    Empty when unknown (a folder written by `save()` alone, or by lch before it recorded this).
    """
    try:
        extent = (read_spec(directory) or {}).get(TRAINED_KEY, {})
    except UserError:
        return {}
    return extent if isinstance(extent, dict) else {}
