"""`lm-eval`: any lm-evaluation-harness task (RULER, LongBench, babilong, ...) as a sweep task.

Each lch sample is one lm-eval document: its requests run through the method by `LchLM` (the same
adapter as `lm_eval --model lch`), inside lm-eval's own `evaluate` (its prompts, filters and
`process_results`), so per-sample metrics and the runner's costs land in the store like any other
task and a sweep resumes per document.

Config: `tasks` (lm-eval names; lch's own lm-eval tasks under `harness/lm_eval/tasks` are always
available), `metadata` (what `lm_eval --metadata` takes). The cell's length becomes
`max_seq_lengths: [length]` (RULER's convention) unless `metadata` sets it, and the tokenizer synthetic
tasks generate data with is the evaluated model's own. `apply_chat_template` and `system_instruction`
are `lm_eval`'s flags of the same names (the model tokenizer's chat template). Documents are the first
`samples` of each lm-eval task, interleaved (`doc * n_tasks + task`), so sample `i` does not depend on
the count.
The sample's `score` is its first metric in the lm-eval task's order, or, for RULER, the metric named
by its length (RULER writes -1 under the other lengths; those placeholders are dropped).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from harness.core.errors import UserError
from harness.core.paths import LM_EVAL_TASKS_DIR, cache_dir
from tasks import ruler_offline
from tasks.base import Instance, Score, Task, TaskConfig, register_task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class LmEvalConfig(TaskConfig):
    """lm-eval task names and the metadata their loaders read."""

    tasks: list[str] = Field(min_length=1)
    metadata: dict[str, Any] = {}
    apply_chat_template: bool = False  # prompts in the tokenizer's chat template (`lm_eval --apply_chat_template`)
    system_instruction: str | None = None  # `lm_eval --system_instruction`


@register_task("lm-eval")
class LmEval(Task):
    """lm-evaluation-harness tasks, one document per sample, run through the lch method under test."""

    description = "any lm-evaluation-harness task (e.g. RULER niah_single_1), one document per sample"
    Config = LmEvalConfig
    headline = "score"
    default_lengths = (4096,)  # RULER's default max_seq_lengths

    def __init__(self, config: LmEvalConfig, tokenizer: PreTrainedTokenizerBase):
        super().__init__(config, tokenizer)
        self._tasks: dict[str, Any] = {}
        self._offline: list[str] = []  # lch's substitutes for RULER's downloads (`tasks.ruler_offline`)

    @classmethod
    def check_config(cls, config: LmEvalConfig) -> None:
        """The lm-eval task names exist (lm-eval's index, read once per process), before anything runs."""
        _check_names(config.tasks, _manager(json.dumps(config.metadata, sort_keys=True)))

    @classmethod
    def report_name(cls, config: dict[str, Any]) -> str:
        """`lm-eval:niah_single_1+niah_multikey_1`: different lm-eval tasks are different benchmarks."""
        return f"{cls.name}:{'+'.join(config.get('tasks', []))}"

    def _load(self, length: int) -> dict[str, Any]:
        self._offline = ruler_offline.serve(self.config.tasks)
        metadata = {"max_seq_lengths": [length], "tokenizer": _tokenizer_dir(self.tokenizer), **self.config.metadata}
        tasks = _load_tasks(tuple(self.config.tasks), json.dumps(metadata, sort_keys=True))
        self._tasks.update(tasks)
        return tasks

    def instances(self, length: int, n: int, seed: int) -> list[Instance]:
        """The first `n` documents of every lm-eval task at `length` (lm-eval owns the data, so `seed` is unused)."""
        tasks = self._load(length)
        names = sorted(tasks)
        requests = {name: self._requests(tasks[name], n) for name in names}
        out = []
        for doc_id in range(n):
            for name in names:
                if doc_id in requests[name]:
                    out.append(self._instance(name, tasks[name], doc_id, requests[name][doc_id]))
        return out

    def _prompting(self) -> dict[str, Any]:
        """How lm-eval formats prompts, as `evaluate` takes it."""
        return self.config.model_dump(include={"apply_chat_template", "system_instruction"})

    def _requests(self, task, n: int) -> dict[int, list]:
        """The lm-eval requests of the first `n` documents, by document, built in one pass."""
        from harness.lm_eval.adapter import chat_prompt

        chat = functools.partial(chat_prompt, self.tokenizer) if self.config.apply_chat_template else None
        documents = list(range(min(n, len(task.eval_docs))))
        task.build_all_requests(samples=documents, chat_template=chat, **self._prompting())
        by_doc: dict[int, list] = {}
        for request in task.instances:
            by_doc.setdefault(request.doc_id, []).append(request)
        return by_doc

    def _instance(self, name: str, task, doc_id: int, requests: list) -> Instance:
        from harness.lm_eval.adapter import hf_encode

        request = requests[0]
        text = request.args[0] + (request.args[1] if request.request_type == "loglikelihood" else "")
        doc = task.eval_docs[doc_id]
        return Instance(
            id=f"{name}/{doc_id}",
            input_ids=hf_encode(self.tokenizer, text),  # what the adapter feeds the method
            target=json.dumps(task.doc_to_target(doc), default=str),
            metadata={
                "lm_eval_task": name,
                "doc_id": doc_id,
                "requests": len(requests),
                "chars": len(text),
                **({"offline": self._offline} if name in ruler_offline.ESSAY_TASKS and self._offline else {}),
            },
        )

    def evaluate(self, model, instance: Instance) -> Score:
        """Run the document's requests through `model` with lm-eval's `evaluate`; score with its metrics."""
        from lm_eval.evaluator import evaluate

        from harness.lm_eval.adapter import LchLM

        name, doc_id = instance.metadata["lm_eval_task"], instance.metadata["doc_id"]
        lm = LchLM.wrap(model)
        results = evaluate(
            lm,
            {name: self._tasks[name]},
            samples={name: [doc_id]},
            bootstrap_iters=0,
            verbosity="ERROR",
            **self._prompting(),
        )
        (sample,) = results["samples"][name]
        metrics = {m: float(sample[m]) for m in sample["metrics"] if _is_number(sample[m]) and sample[m] != -1}
        length = str(sample["doc"].get("max_length", ""))
        headline = length if length in metrics else next(iter(metrics), None)
        if headline is None:
            raise RuntimeError(f"lm-eval task '{name}' gave no numeric metric for document {doc_id}")
        prediction = sample["filtered_resps"][0]
        return Score(
            score=metrics[headline],
            metrics={"score": metrics[headline], **metrics},
            prediction=prediction if isinstance(prediction, str) else json.dumps(prediction, default=str),
            decode_tokens=lm.decoded_tokens,
            details={"headline_metric": headline, "over_length_requests": lm.over_length},
        )


def _is_number(value) -> bool:
    return isinstance(value, int | float)  # bools (exact-match style metrics) count as 0/1


@functools.cache
def _manager(metadata_json: str):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(LM_EVAL_TASKS_DIR), metadata=json.loads(metadata_json))


def _check_names(names, manager) -> None:
    """Every name is an lm-eval task or group the manager indexes, else a one-line error with close names."""
    for name in names:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=5)
            raise UserError(f"unknown lm-eval task '{name}'. Close names: {', '.join(close) or 'none'}")


@functools.cache
def _load_tasks(names: tuple[str, ...], metadata_json: str) -> dict[str, Any]:
    """lm-eval Task objects by name, groups flattened; cached (indexing lm-eval's YAML takes seconds)."""
    from lm_eval.tasks import get_task_dict

    manager = _manager(metadata_json)
    _check_names(names, manager)
    with _seeded():
        return dict(_flatten(get_task_dict(list(names), manager)))


@contextlib.contextmanager
def _seeded():
    """lm-eval's own seeds around task loading: RULER draws its needles from the global RNGs.

    `simple_evaluate` seeds `random` with 0 and numpy and torch with 1234 before loading tasks, so
    the documents here are the ones `lm_eval` builds, in every process (resume depends on it).
    The caller's RNG states are restored afterwards.
    """
    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    random.seed(0)
    np.random.seed(1234)
    torch.manual_seed(1234)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


def _flatten(task_dict):
    """(name, Task) pairs; a group's key maps to a dict of its subtasks."""
    for key, value in task_dict.items():
        if isinstance(value, dict):
            yield from _flatten(value)
        else:
            yield key, value


def _tokenizer_dir(tokenizer) -> str:
    """A directory lm-eval's synthetic tasks can load the evaluated model's tokenizer from."""
    if tokenizer.name_or_path and Path(tokenizer.name_or_path).is_dir():
        return str(tokenizer.name_or_path)
    digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]
    target = cache_dir() / "tokenizers" / digest
    if not (target / "tokenizer_config.json").exists():
        tokenizer.save_pretrained(target)
    return str(target)
