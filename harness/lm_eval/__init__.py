"""lm-evaluation-harness integration: lch methods as the lm-eval model `lch`, lm-eval tasks in lch sweeps.

Importing this package imports nothing heavy: `adapter` (the model) and `sweep_task` need lm-eval and torch.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).parent / "tasks"  # lch's own tasks as lm-eval YAML: `lm_eval --include_path`
