"""Passkey training records: the `passkey` task's own raw prompt, with the key as the answer.

The prompt is built by the task's `tasks.passkey.PasskeyPrompt` (one code path for both), in its raw
Landmark frame without a BOS: the task line, filler, the needle at a depth, the question and "The
pass key is". Keys come from `lch-train-passkey-{seed}-{index}`, never from the task's
`passkey-{seed}-{index}`, so a model is not trained on the keys it is evaluated on.

Record (SmolLM2's tokenizer, defaults, seed 0; one line):
    {"prompt": "There is an important info hidden ... What is the pass key? The pass key is", "answer": " 91081",
     "key": 91081, "length": 1024, "depth": 0.3630420245056116, "needle_token": 377}
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from harness.core.errors import UserError
from tasks.generated import Generator, LengthConfig, register_generator
from tasks.tokens import ids


class PasskeyDataConfig(LengthConfig):
    """`length`: the prompt's exact tokens without special tokens (default 1024), or `[min, max]` drawn per record.

    `depths`: where the needle sits, 0 right after the task line, 1 right before the question; `[]`
    (default) draws each record's depth uniformly in [0, 1], a list puts record `i` at `depths[i % len(depths)]`.
    """

    depths: list[Annotated[float, Field(ge=0.0, le=1.0)]] = []


@register_generator("passkey")
class PasskeyData(Generator):
    """The passkey task's prompt at an exact token length; the answer is " KEY"."""

    description = "the passkey task's raw prompt at an exact token length, needle at a drawn depth; answer ' KEY'"
    Config = PasskeyDataConfig
    needs_tokenizer = True

    def __init__(self, config: PasskeyDataConfig, tokenizer=None):
        super().__init__(config, tokenizer)
        # Imported here: tasks.passkey imports torch, which `lch --help` (listing generators) does without.
        from tasks.passkey import ANSWER_PREFIX, PasskeyPrompt

        self.prompt = PasskeyPrompt(tokenizer, [], ids(tokenizer, " " + ANSWER_PREFIX), config.max_length)

    def record(self, seed: int, index: int) -> dict[str, Any]:
        """A prompt of exactly `length` tokens hiding a 5-digit key; the answer is the key after a space."""
        rng = self.rng(seed, index)
        key = rng.randint(10000, 99999)
        depths = self.config.depths
        depth = depths[index % len(depths)] if depths else rng.random()
        length = self.config.draw_length(rng)
        try:
            prompt_ids, needle_token = self.prompt(length, key, depth)
        except ValueError as error:
            raise UserError(f"passkey: {error}") from None
        prompt = self.tokenizer.decode(prompt_ids, clean_up_tokenization_spaces=False)
        if ids(self.tokenizer, prompt) != prompt_ids:
            # The trainer tokenizes the text, so its length must be the text's, not the ids'.
            raise UserError("passkey: this tokenizer does not read its decoded prompt back as the same tokens")
        return {
            "prompt": prompt,
            "answer": f" {key}",
            "key": key,
            "length": length,
            "depth": depth,
            "needle_token": needle_token,
        }
