"""LongBench v1 (Bai et al., 2023) as the task `longbench`: 21 datasets, official prompts, truncation and metrics.

The cell length is the truncation budget `max_length` in prompt tokens (default 3500, the official
budget of 4K-context chat models). See tasks/longbench/README.md for the protocol and every deviation.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import field_validator

from harness.core.errors import UserError
from methods.base import InputTooLong
from tasks.base import Instance, Score, Task, TaskConfig, register_task
from tasks.longbench.build import (
    DATASETS,
    DEFAULT_MAX_LENGTH,
    MAX_NEW_TOKENS,
    Truncation,
    load_records,
    local_file,
    render_prompt,
    split_prompt,
    truncate,
    use_chat_template,
)
from tasks.longbench.metrics import CATEGORY_OF, score_prediction, summarize
from tasks.tokens import bos_prefix, chat_frame, eos_stop, ids


class LongBenchConfig(TaskConfig):
    """Which datasets and which protocol.

    `truncation`: `middle` (official: keep the first and last max_length/2 prompt tokens, before the
    chat template), `left` (keep the last max_length tokens), `none`, or `skip` (an over-budget record
    is kept as a sample but not run and left out of every mean). `chat_template`: `auto` is the
    official rule (template on every dataset but trec, triviaqa, samsum, lsht, lcc, repobench-p, and
    only when the tokenizer has one), `on` every dataset, `off` none. `data_dir`: local data (default
    `$LCH_DATA_DIR`, else `../shared/data`, else the Hugging Face hub). `e`: add LongBench-E length buckets.
    `query_position`: `inside` (default, official) gives the method the whole prompt; `after` prefills the
    instruction and context first and feeds the rest (question, answer cue) from a copy of the state after
    them (`harness.shared_context`: records with the same context share its prefill). Deviations of `after`,
    as kvpress's split: the two parts are tokenized apart, and truncation cuts the context alone to what the
    budget leaves after the question (officially the whole prompt is cut).
    """

    datasets: list[str] = list(DATASETS)
    truncation: Truncation = "middle"
    chat_template: Literal["auto", "on", "off"] = "auto"
    data_dir: str | None = None
    e: bool = False
    query_position: Literal["inside", "after"] = "inside"
    later_options: ClassVar[tuple[str, ...]] = ("query_position",)

    @field_validator("datasets", mode="before")
    @classmethod
    def _check_datasets(cls, value: Any) -> list[str]:
        names = [value] if isinstance(value, str) else list(value)
        unknown = [name for name in names if name not in DATASETS]
        if unknown or not names:
            name = unknown[0] if unknown else ""
            raise ValueError(f"unknown LongBench dataset '{name}'. Valid: {', '.join(DATASETS)}")
        return list(dict.fromkeys(names))  # drop repeats, keep the order given


@register_task("longbench")
class LongBench(Task):
    """LongBench v1: per-sample official metric x 100; the headline is the mean of the dataset means."""

    description = "LongBench v1, 21 datasets, official prompts, middle truncation and metrics"
    Config = LongBenchConfig
    headline = "average"
    version = 1
    default_lengths = (DEFAULT_MAX_LENGTH,)

    def __init__(self, config: LongBenchConfig, tokenizer):
        super().__init__(config, tokenizer)
        self._frames: dict[str, tuple[list[int], list[int]]] = {}
        self._newlines: list[int] | None = None

    @classmethod
    def check_config(cls, config: LongBenchConfig) -> None:
        """Check that a named data directory holds every chosen dataset's file (no reading)."""
        for dataset in config.datasets:
            local_file(dataset, config.data_dir)

    def _ids(self, text: str) -> list[int]:
        return ids(self.tokenizer, text)

    def frame(self, dataset: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the prompt body: the chat template around it, or just BOS."""
        if dataset not in self._frames:
            if use_chat_template(dataset, self.config.chat_template, self.tokenizer):
                before, after = chat_frame(self.tokenizer)
                self._frames[dataset] = (self._ids(before), self._ids(after))
            else:
                self._frames[dataset] = (bos_prefix(self.tokenizer), [])
        return self._frames[dataset]

    def instances(self, length: int, n: int, seed: int) -> list[Instance]:
        """Return the first `n` records of each dataset, interleaved (record 0 of every dataset, then record 1, ...).

        Interleaving keeps instance `i` independent of `n`, so a rerun with more samples resumes
        cleanly. `seed` is unused: the records are taken in file order.
        """
        records = {name: load_records(name, n, self.config.data_dir) for name in self.config.datasets}
        out = []
        for row in range(n):
            for name in self.config.datasets:
                if row < len(records[name]):
                    out.append(self._instance(name, row, records[name][row], length))
        return out

    def _instance(self, dataset: str, row: int, record: dict[str, Any], length: int) -> Instance:
        prompt = render_prompt(dataset, record)
        after = self.config.query_position == "after"
        if after:
            context, question = (self._ids(part) for part in split_prompt(dataset, record))
            body = context + question
        else:
            body, question = self._ids(prompt), []
        # An over-budget `skip` record is never run; its ids are the middle cut, so it never trips max_context.
        mode = "middle" if self.config.truncation == "skip" else self.config.truncation
        kept = self._cut(body, len(question), length, mode)
        prefix, suffix = self.frame(dataset)
        answers = list(record["answers"])
        never_run = self.config.truncation == "skip" and len(body) > length
        return Instance(
            id=f"longbench-{dataset}-{row}",
            input_ids=prefix + kept + suffix,
            context_tokens=len(prefix) + len(kept) - len(question) if after and not never_run else 0,
            target=answers[0] if answers else "",
            max_new_tokens=MAX_NEW_TOKENS[dataset],
            metadata={
                "dataset": dataset, "category": CATEGORY_OF[dataset], "language": record.get("language"),
                "length": record.get("length"), "chars": len(prompt if kept == body else self.tokenizer.decode(kept)),
                "_id": record.get("_id"), "max_length": length, "prompt_tokens": len(body),
                "answers": answers, "all_classes": record.get("all_classes"), "question_tokens": len(question),
            },
        )  # fmt: skip

    def budget(self, instance: Instance, max_context: int | None) -> int:
        """Prompt-token budget: the cell length, lowered so prompt + frame + new tokens fit `max_context`."""
        budget = instance.metadata["max_length"]
        if max_context is None:
            return budget
        prefix, suffix = self.frame(instance.metadata["dataset"])
        room = max_context - instance.max_new_tokens - len(prefix) - len(suffix)
        if room < 1:
            raise InputTooLong(f"max_context {max_context} < frame + {instance.max_new_tokens} new tokens")
        return min(budget, room)

    def evaluate(self, model, instance: Instance) -> Score:
        """Truncate to the effective budget, prefill, decode greedily, score with the dataset's official metric."""
        meta = instance.metadata
        dataset = meta["dataset"]
        prefix, suffix = self.frame(dataset)
        body = instance.input_ids[len(prefix) : len(instance.input_ids) - len(suffix)]
        budget = self.budget(instance, getattr(model, "max_context", None))
        over = meta["prompt_tokens"] > budget
        details = {"budget": budget, "prompt_tokens": meta["prompt_tokens"]}
        if self.config.truncation == "skip" and over:
            metrics = {"skipped": 1.0, "truncated": 0.0, "record_length": float(meta["length"] or 0)}
            return Score(score=math.nan, metrics=metrics, details={**details, "truncated": False, "skipped": True})
        # Middle and left cuts compose (cutting a cut to a smaller budget equals cutting the original), so
        # the instance's ids can be cut again when max_context asks for less than the cell length.
        cut = self._cut(body, meta.get("question_tokens", 0), budget, self.config.truncation)
        if instance.context_tokens and cut != body:
            raise UserError(
                f"longbench: query_position after needs the cell length ({meta['max_length']}) to fit the method's "
                f"max_context with the frame and {instance.max_new_tokens} new tokens (budget {budget})"
            )
        body = cut
        truncated = over and self.config.truncation != "none"
        model.prefill(torch.tensor(prefix + body + suffix))
        tokens = model.decode(instance.max_new_tokens, stop_ids=self._stop_ids(dataset))
        prediction = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if dataset == "samsum":  # pred.py stops samsum at a newline
            prediction = prediction.split("\n")[0]
        value = 100 * score_prediction(dataset, prediction, meta["answers"], meta["all_classes"])
        metrics = {"score": value, dataset: value, "truncated": float(truncated), "skipped": 0.0,
                   "record_length": float(meta["length"] or 0)}  # fmt: skip
        details.update(truncated=truncated, skipped=False, input_tokens=len(prefix) + len(body) + len(suffix))
        return Score(score=value, metrics=metrics, prediction=prediction, decode_tokens=len(tokens), details=details)

    @staticmethod
    def _cut(body: list[int], question: int, budget: int, mode: Truncation) -> list[int]:
        """`truncate` the prompt; with a separate question (`after`), its context alone to what the question leaves."""
        if not question:
            return truncate(body, budget, mode)
        context = body[: len(body) - question]
        return truncate(context, max(budget - question, 0), mode) + body[len(body) - question :]

    def _stop_ids(self, dataset: str) -> list[int]:
        stops = eos_stop(self.tokenizer)
        if dataset == "samsum":
            stops += self.newline_ids()
        return stops

    def newline_ids(self) -> list[int]:
        """Every token whose text contains a newline (pred.py adds the newline token to samsum's stop ids)."""
        if self._newlines is None:
            vocab = range(len(self.tokenizer))
            texts = self.tokenizer.batch_decode([[i] for i in vocab], skip_special_tokens=False)
            self._newlines = [i for i, text in zip(vocab, texts, strict=True) if "\n" in text]
        return self._newlines

    def aggregate(self, scores: list[Score]) -> dict[str, float]:
        """Dataset, category and leaderboard means (see `metrics.summarize`), plus truncated / skipped counts."""
        scored = []
        for score in scores:
            if score.metrics.get("skipped"):
                continue
            dataset = next(key for key in score.metrics if key in CATEGORY_OF)
            scored.append((dataset, score.metrics[dataset], score.metrics.get("record_length", 0.0)))
        out = summarize(scored, e=self.config.e)
        out["truncated"] = float(sum(s.metrics.get("truncated", 0.0) for s in scores))
        out["skipped"] = float(sum(s.metrics.get("skipped", 0.0) for s in scores))
        return out
