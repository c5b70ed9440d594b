"""Passkey retrieval in the Landmark-attention format (Mohtashami & Jaggi, 2023).

Source: epfml/landmark-attention `llama/run_test.py` (`generate_prompt`).
Deviations from the original (which cuts the filler in
characters and draws a uniform needle position): the length is exact in the evaluated tokenizer's
tokens, the needle sits at a set depth, and the key has 5 digits (as Activation Beacon's passkey);
the character length is recorded per sample.
"""

from __future__ import annotations

import random
import re
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator

from tasks.base import Instance, Score, Task, TaskConfig, register_task
from tasks.tokens import bos_prefix, chat_frame, eos_stop, ids, wants_chat_template

TASK_LINE = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key?"
ANSWER_PREFIX = "The pass key is"
# Several keys in one context (`keys` > 1, lch's own variant after RULER's multi-key needles): numbered.
NUMBERED_NEEDLE = "The pass key number {n} is {key}. Remember it. {key} is the pass key number {n}."
NUMBERED_QUESTION = "What is the pass key number {n}?"
NUMBERED_ANSWER_PREFIX = "The pass key number {n} is"


class PasskeyPrompt:
    """The Landmark prompt in one tokenizer's ids, cut to an exact length: the task's and `lch make-data`'s.

    The task line, filler and question are tokenized once; each prompt tokenizes only its needle.

    Args:
        tokenizer: the tokenizer whose tokens are counted.
        prefix: ids before the task line (a BOS, or the chat template's opening).
        suffix: ids after the question (" The pass key is", or the chat template's generation prompt and it).
        max_length: the longest prompt that will be asked for (sizes the filler).

    """

    def __init__(self, tokenizer, prefix: list[int], suffix: list[int], max_length: int):
        self.tokenizer = tokenizer
        self.head = prefix + ids(tokenizer, TASK_LINE + "\n")
        self.question = ids(tokenizer, "\n" + QUESTION) + suffix
        self.filler = ids(tokenizer, " ".join([FILLER] * (max_length // 8 + 8)))

    def __call__(self, length: int, key: int, depth: float) -> tuple[list[int], int]:
        """The ids of a prompt of exactly `length` tokens hiding `key` at `depth`, and the needle's first index."""
        needle = ids(self.tokenizer, "\n" + NEEDLE.format(key=key) + "\n")
        room = length - len(self.head) - len(needle) - len(self.question)
        if room < 0 or room > len(self.filler):
            raise ValueError(f"passkey length {length} is too short for the prompt ({length - room} tokens)")
        before = round(depth * room)
        prompt = self.head + self.filler[:before] + needle + self.filler[: room - before] + self.question
        return prompt, len(self.head) + before

    def context(self, room: int, needles: list[tuple[list[int], float]]) -> tuple[list[int], list[int]]:
        """The head and `room` filler tokens with each `(needle ids, depth)` hidden at its depth; where each starts."""
        assert 0 <= room <= len(self.filler), room
        context, cut, starts = list(self.head), 0, {}
        for index in sorted(range(len(needles)), key=lambda i: needles[i][1]):
            needle, depth = needles[index]
            before = round(depth * room)
            context += self.filler[cut:before]
            starts[index], cut = len(context), before
            context += needle
        return context + self.filler[cut:room], [starts[i] for i in range(len(needles))]


class PasskeyConfig(TaskConfig):
    """Depths cycle over the samples: sample `i` puts the needle at `depths[i % len(depths)]`.

    `depth` 0 puts the needle right after the task line, 1 right before the question.
    `keys` > 1 hides that many numbered keys in one context ("The pass key number 2 is ...", lch's variant
    after RULER's multi-key needles), asked one per sample: samples `g * keys` to `g * keys + keys - 1` share
    context `g`, key `j` at the depth sample `g * keys + j` would have; the filler leaves room for the longest
    question, so a sample may be a token or two under `length`. `query_position`: `inside` (default) gives
    the method each prompt whole; `after` prefills the context once and asks each of its questions from a
    copy of the method's state after it (shared context; methods that cannot copy run the prompt whole).
    `chat_template`: `off` (default) is the original raw Landmark prompt; `on` wraps the prompt in
    the tokenizer's chat template keeping the answer prefix "The pass key is" after the generation
    prompt, and `auto` does so when the tokenizer has a template. Measured on SmolLM2-135M-Instruct
    at 2K (20 samples): off 0.80, on 0.70 accuracy, so the raw prompt stays the default.
    """

    depths: list[float] = [0.0, 0.25, 0.5, 0.75, 1.0]
    max_new_tokens: int = 10
    chat_template: Literal["auto", "on", "off"] = "off"
    keys: int = Field(1, ge=1, le=9)
    query_position: Literal["inside", "after"] = "inside"
    later_options: ClassVar[tuple[str, ...]] = ("keys", "query_position")

    @field_validator("depths")
    @classmethod
    def _check_depths(cls, depths: list[float]) -> list[float]:
        if not depths or any(not 0.0 <= d <= 1.0 for d in depths):
            raise ValueError(f"depths must be a non-empty list of numbers in [0, 1], got {depths}")
        return depths


@register_task("passkey")
class Passkey(Task):
    """Find a 5-digit key hidden in repeated filler; score 1 if the first integer answered is the key."""

    description = "passkey retrieval (Landmark format), exact token length, needle at set depths"
    Config = PasskeyConfig
    headline = "accuracy"
    chance = 0.0  # guessing a random 5-digit number

    def _ids(self, text: str) -> list[int]:
        return ids(self.tokenizer, text)

    @classmethod
    def report_name(cls, config) -> str:
        """`passkey`, or `passkey:4 keys, after` for several keys a context or questions after a shared context."""
        keys, position = config.get("keys", 1), config.get("query_position", "inside")
        parts = ([f"{keys} keys"] if keys > 1 else []) + (["after"] if position == "after" else [])
        return f"{cls.name}:{', '.join(parts)}" if parts else cls.name

    def _frame(self, answer_prefix: str = ANSWER_PREFIX) -> tuple[list[int], list[int]]:
        """Token ids before the task line and after the question (chat template or plain)."""
        if not wants_chat_template(self.tokenizer, self.config.chat_template):
            return bos_prefix(self.tokenizer), self._ids(" " + answer_prefix)
        before, after = chat_frame(self.tokenizer)
        return self._ids(before), self._ids(after + answer_prefix)

    def instances(self, length: int, n: int, seed: int) -> list[Instance]:
        """`n` prompts of exactly `length` tokens; the key of sample `i` is drawn from `(seed, i)`."""
        if self.config.keys > 1:
            return self._numbered(length, n, seed)
        prompt = PasskeyPrompt(self.tokenizer, *self._frame(), max_length=length)
        out = []
        for index in range(n):
            depth = self.config.depths[index % len(self.config.depths)]
            key = random.Random(f"passkey-{seed}-{index}").randint(10000, 99999)
            ids, needle_token = prompt(length, key, depth)
            out.append(
                self._instance(f"passkey-{length}-{seed}-{index}", ids, len(prompt.question), key, depth, needle_token)
            )
        return out

    def _numbered(self, length: int, n: int, seed: int) -> list[Instance]:
        """`keys` numbered keys a context, one question a sample (`PasskeyConfig`)."""
        count, depths = self.config.keys, self.config.depths
        prefix, _ = self._frame()
        prompt = PasskeyPrompt(self.tokenizer, prefix, [], max_length=length)
        questions = [
            self._ids("\n" + NUMBERED_QUESTION.format(n=j + 1)) + self._frame(NUMBERED_ANSWER_PREFIX.format(n=j + 1))[1]
            for j in range(count)
        ]
        out = []
        for group in range((n + count - 1) // count):
            draw = random.Random(f"passkey-{seed}-{group}-numbered")
            keys = draw.sample(range(10000, 100000), count)
            needles = [self._ids("\n" + NUMBERED_NEEDLE.format(n=j + 1, key=keys[j]) + "\n") for j in range(count)]
            placed = [depths[(group * count + j) % len(depths)] for j in range(count)]
            room = length - len(prompt.head) - sum(map(len, needles)) - max(map(len, questions))
            if room < 0:
                raise ValueError(f"passkey length {length} is too short for {count} keys ({length - room} tokens)")
            context, starts = prompt.context(room, list(zip(needles, placed, strict=True)))
            for j in range(min(count, n - group * count)):
                index = group * count + j
                ids = context + questions[j]
                out.append(self._instance(f"passkey-{count}keys-{length}-{seed}-{index}", ids, len(questions[j]),
                                          keys[j], placed[j], starts[j]))  # fmt: skip
        return out

    def _instance(self, name: str, ids: list[int], question: int, key: int, depth: float, needle: int) -> Instance:
        """One sample; its context (all but the `question` last ids) is shared when questions come after it."""
        return Instance(
            id=name,
            input_ids=ids,
            target=str(key),
            max_new_tokens=self.config.max_new_tokens,
            metadata={"depth": depth, "chars": len(self.tokenizer.decode(ids)), "needle_token": needle},
            context_tokens=len(ids) - question if self.config.query_position == "after" else 0,
        )

    def evaluate(self, model, instance: Instance) -> Score:
        """Prefill the prompt, decode greedily, compare the first integer with the key."""
        model.prefill(torch.tensor(instance.input_ids))
        tokens = model.decode(instance.max_new_tokens, stop_ids=eos_stop(self.tokenizer))
        prediction = self.tokenizer.decode(tokens, skip_special_tokens=True)
        found = re.search(r"\d+", prediction)
        accuracy = float(found is not None and found.group() == instance.target)
        return Score(
            score=accuracy,
            metrics={"accuracy": accuracy, "contains": float(instance.target in prediction)},
            prediction=prediction,
            decode_tokens=len(tokens),
        )
