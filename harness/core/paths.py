"""Where lch keeps files: converted models (`cache_dir`) and its own tasks as lm-eval YAML (`LM_EVAL_TASKS_DIR`)."""

from __future__ import annotations

import os
from pathlib import Path

LM_EVAL_TASKS_DIR = Path(__file__).parents[1] / "lm_eval" / "tasks"  # `lm_eval --include_path`


def cache_dir() -> Path:
    """Where converted models live: `$LCH_CACHE` or `~/.cache/lch`."""
    return Path(os.environ.get("LCH_CACHE", Path.home() / ".cache" / "lch"))
