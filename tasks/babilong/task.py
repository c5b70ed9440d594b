"""BABILong (Kuratov et al., 2024, https://arxiv.org/abs/2406.10149) as the task `babilong`, qa1-qa5.

Each bAbI test question's facts are hidden at seeded sentence boundaries of PG19 test-book text
(`tasks.haystack`) so that the whole input (frame, instruction, examples, context, question) is exactly
the cell length in the evaluated tokenizer's tokens; length 0 is the facts alone (BABILong's 0k). The
official prompt and scoring follow (`build.py`, `metrics.py`): greedy decoding of 20 new tokens, the
answer right when it names exactly the target label. The headline is the mean over the chosen tasks of
each task's accuracy (%), BABILong's "avg"; `aggregate` also gives each task's accuracy and `chance_qaN`,
the share of its most frequent answer (what one constant answer scores).

Differences from booydar/babilong, which builds contexts in GPT-2 tokens, names lengths 0k/1k/2k/4k/...
(1,000 tokens each) and gives the context `length - 300` of them: lch's length is the model's whole input
in its own tokens, so a 4096 cell is close to BABILong's 4k; the background is drawn per sample from the
seed (official: one sampler seeded 42 for a whole split), so samples do not depend on each other.
"""

from __future__ import annotations

import random
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator

from harness.core.errors import UserError
from tasks.babilong import build, metrics
from tasks.base import Instance, Score, Task, TaskConfig, register_task
from tasks.haystack import Haystack
from tasks.tokens import bos_prefix, chat_frame, eos_stop, ids, wants_chat_template

MARK = "\x00CONTEXT\x00"  # a placeholder no prompt holds, split on to find the text around the context


class BabilongConfig(TaskConfig):
    """Which tasks, samples and prompt.

    `tasks`: any of qa1-qa5 (default all five). `subset`: `test_100` (default: the 100 samples per task of
    the published RMT-team/babilong set, by `test_100_idxs.json`) or `all` (bAbI's 1,000 test questions).
    `prompt`: `instructed` (the task's instruction, examples and post-prompt) or `plain` (context and
    question only), BABILong's two configurations. `chat_template`: `off` (default; how the published
    SmolLM2 rows were run), `on`, or `auto` (when the tokenizer has one). `data_dir`: holds `babilong/`
    and `books/` (default: LCH_DATA_DIR or ../shared/data). `query_position`: `inside` (default) gives the
    method the whole prompt; `after` prefills the instruction and context first and feeds the question from
    a copy of the state after them (`harness.shared_context`; each bAbI question has its own context, so
    nothing is shared: the split alone, as kvpress makes it).
    """

    tasks: list[build.BabilongTask] = Field(default_factory=lambda: list(build.TASKS), min_length=1)
    subset: Literal["test_100", "all"] = "test_100"
    prompt: Literal["instructed", "plain"] = "instructed"
    chat_template: Literal["auto", "on", "off"] = "off"
    max_new_tokens: int = Field(20, ge=1)
    data_dir: str | None = None
    query_position: Literal["inside", "after"] = "inside"
    later_options: ClassVar[tuple[str, ...]] = ("query_position",)

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, tasks: list[str]) -> list[str]:
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must not repeat, got {tasks}")
        return tasks


@register_task("babilong")
class Babilong(Task):
    """bAbI questions whose facts hide in book text; accuracy (%) of the one label answered, per task and mean."""

    description = "BABILong qa1-qa5: bAbI facts hidden in PG19 test books, official prompt and metric; 0 = facts only"
    Config = BabilongConfig
    headline = "accuracy"
    chance = 100 / 7  # a uniform guess among a task's labels (6 places; qa5's 7 names and objects)
    length_zero = "the facts alone, without background (BABILong's 0k)"

    def __init__(self, config: BabilongConfig, tokenizer):
        super().__init__(config, tokenizer)
        self._haystack: Haystack | None = None

    @classmethod
    def check_config(cls, config: BabilongConfig) -> None:
        """Check that the data directory holds bAbI's test files and the PG19 test books."""
        build.babi_folder(config.data_dir)
        build.pg19_test_books(config.data_dir)

    @classmethod
    def report_name(cls, config) -> str:
        """`babilong`, `babilong:qa1,qa3` when some tasks are left out, `babilong:after` (or `:qa1,after`)."""
        tasks = config.get("tasks") or list(build.TASKS)
        parts = ([",".join(tasks)] if list(tasks) != list(build.TASKS) else []) + (
            ["after"] if config.get("query_position") == "after" else []
        )
        return f"{cls.name}:{','.join(parts)}" if parts else cls.name

    @property
    def haystack(self) -> Haystack:
        """The background sampler over the PG19 test books, built on first use (reading the books takes a second)."""
        if self._haystack is None:
            self._haystack = Haystack(self.tokenizer, build.pg19_test_books(self.config.data_dir), "babilong")
        return self._haystack

    def frame(self) -> tuple[list[int], list[int]]:
        """Ids before and after the prompt text: a BOS, or the chat template's opening and generation prompt."""
        if wants_chat_template(self.tokenizer, self.config.chat_template):
            before, after = chat_frame(self.tokenizer)
            return ids(self.tokenizer, before), ids(self.tokenizer, after)
        return bos_prefix(self.tokenizer), []

    def instances(self, length: int, n: int, seed: int) -> list[Instance]:
        """The first `n` samples of each task, interleaved (sample 0 of every task, then sample 1, ...).

        Sample `i` of a task draws its background and the facts' places from `(seed, task, i)` alone.
        """
        folder = build.babi_folder(self.config.data_dir)
        out = []
        for row in range(n):
            for task in self.config.tasks:
                chosen = build.samples(task, folder, self.config.subset)
                if row < len(chosen):
                    out.append(self._instance(task, row, chosen[row], length, seed))
        return out

    def _instance(self, task: str, row: int, sample: build.Sample, length: int, seed: int) -> Instance:
        head, tail = build.render(task, MARK, sample.question, self.config.prompt == "instructed").split(MARK)
        prefix, suffix = self.frame()
        before, after = prefix + ids(self.tokenizer, head), ids(self.tokenizer, tail) + suffix
        book = None
        if length == 0:
            context = " ".join(sample.facts)
        else:
            budget = length - len(before) - len(after)
            if budget < 1:
                raise UserError(
                    f"babilong: length {length} is shorter than the {task} prompt without its context "
                    f"({len(before) + len(after)} tokens): give a longer length, or 0 for the facts alone"
                )
            rng = random.Random(f"babilong-{task}-{seed}-{row}")
            context, book = self.haystack.context(rng, list(sample.facts), budget)
        context_ids = before + ids(self.tokenizer, context)
        return Instance(
            id=f"babilong-{task}-{length}-{seed}-{row}",
            input_ids=context_ids + after,
            target=sample.answer,
            max_new_tokens=self.config.max_new_tokens,
            metadata={
                "task": task,
                "question": sample.question,
                "facts": len(sample.facts),
                "book": book,
                "chars": len(head) + len(context) + len(tail),
            },  # fmt: skip
            context_tokens=len(context_ids) if self.config.query_position == "after" else 0,
        )

    def evaluate(self, model, instance: Instance) -> Score:
        """Prefill, decode greedily up to `max_new_tokens` (EOS stops), score with the official metric."""
        model.prefill(torch.tensor(instance.input_ids))
        tokens = model.decode(instance.max_new_tokens, stop_ids=eos_stop(self.tokenizer))
        prediction = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        task = instance.metadata["task"]
        value = 100.0 * metrics.correct(task, instance.target, prediction, instance.metadata["question"])
        return Score(
            score=value,
            metrics={"accuracy": value, task: value},
            prediction=prediction,
            decode_tokens=len(tokens),
            details={"target": instance.target},
        )

    def aggregate(self, scores: list[Score]) -> dict[str, float]:
        """Each task's accuracy and chance level, and their means over the tasks (`accuracy`, `chance`)."""
        out: dict[str, float] = {}
        for task in build.TASKS:
            mine = [score for score in scores if task in score.metrics]
            if mine:
                out[task] = sum(score.metrics[task] for score in mine) / len(mine)
                out[f"chance_{task}"] = metrics.chance(task, [score.details["target"] for score in mine])
        tasks = [task for task in build.TASKS if task in out]
        out["accuracy"] = sum(out[task] for task in tasks) / len(tasks) if tasks else float("nan")
        out["chance"] = sum(out[f"chance_{task}"] for task in tasks) / len(tasks) if tasks else float("nan")
        return out
