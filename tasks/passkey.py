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
from typing import Literal

import torch
from pydantic import field_validator

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


class PasskeyConfig(TaskConfig):
    """Depths cycle over the samples: sample `i` puts the needle at `depths[i % len(depths)]`.

    `depth` 0 puts the needle right after the task line, 1 right before the question.
    `chat_template`: `off` (default) is the original raw Landmark prompt; `on` wraps the prompt in
    the tokenizer's chat template keeping the answer prefix "The pass key is" after the generation
    prompt, and `auto` does so when the tokenizer has a template. Measured on SmolLM2-135M-Instruct
    at 2K (20 samples): off 0.80, on 0.70 accuracy, so the raw prompt stays the default.
    """

    depths: list[float] = [0.0, 0.25, 0.5, 0.75, 1.0]
    max_new_tokens: int = 10
    chat_template: Literal["auto", "on", "off"] = "off"

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

    def _frame(self) -> tuple[list[int], list[int]]:
        """Token ids before the task line and after the question (chat template or plain)."""
        if not wants_chat_template(self.tokenizer, self.config.chat_template):
            return bos_prefix(self.tokenizer), self._ids(" " + ANSWER_PREFIX)
        before, after = chat_frame(self.tokenizer)
        return self._ids(before), self._ids(after + ANSWER_PREFIX)

    def instances(self, length: int, n: int, seed: int) -> list[Instance]:
        """`n` prompts of exactly `length` tokens; the key of sample `i` is drawn from `(seed, i)`."""
        prompt = PasskeyPrompt(self.tokenizer, *self._frame(), max_length=length)
        out = []
        for index in range(n):
            depth = self.config.depths[index % len(self.config.depths)]
            key = random.Random(f"passkey-{seed}-{index}").randint(10000, 99999)
            ids, needle_token = prompt(length, key, depth)
            out.append(
                Instance(
                    id=f"passkey-{length}-{seed}-{index}",
                    input_ids=ids,
                    target=str(key),
                    max_new_tokens=self.config.max_new_tokens,
                    metadata={
                        "depth": depth,
                        "chars": len(self.tokenizer.decode(ids)),
                        "needle_token": needle_token,
                    },
                )
            )
        return out

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
