"""lm-evaluation-harness integration: lch methods as the lm-eval model `lch`, lm-eval tasks in lch sweeps.

Importing this package imports nothing heavy: `adapter` (the model) and `sweep_task` need lm-eval and torch.
`TASKS_DIR` holds lch's own tasks as lm-eval YAML (`lm_eval --include_path`).
"""

from harness.core.paths import LM_EVAL_TASKS_DIR as TASKS_DIR

__all__ = ["TASKS_DIR"]
