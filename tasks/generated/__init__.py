"""Generated training sets: the generator contract, its registry, and the JSONL file they are written to.

A generator makes task-shaped training records, each a JSON object with a `prompt` and an `answer`
string (plus metadata of its own); the trainer reads one as tokens(prompt) + tokens(answer) + [EOS]
with the loss on the answer, so an answer starts with the space a tokenizer expects after its prompt.
`lch make-data NAME --out F.jsonl --n N --seed S` writes one.

Record `i` is a pure function of (generator, config, tokenizer, seed, i), drawn from
`random.Random(f"lch-train-{name}-{seed}-{i}")` (babi adds its task: `lch-train-babi-qa2-...`): a
namespace of its own, so training keys never replay an evaluation task's stream (the passkey task
draws from `f"passkey-{seed}-{i}"`).
"""

from __future__ import annotations

import json
import os
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

from harness.core.errors import UserError
from harness.core.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class GeneratorConfig(BaseModel):
    """Base of every generator config: typed, validated, frozen, unknown options refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LengthConfig(GeneratorConfig):
    """A config whose records have a token length: `length` tokens, or `[min, max]` drawn per record (inclusive)."""

    length: int | tuple[int, int] = 1024

    @field_validator("length")
    @classmethod
    def _check_length(cls, length: int | tuple[int, int]) -> int | tuple[int, int]:
        low, high = (length, length) if isinstance(length, int) else length
        if low < 1 or high < low:
            raise ValueError(f"length must be a positive integer or [min, max] with 0 < min <= max, got {length}")
        return length

    @property
    def max_length(self) -> int:
        """The longest length a record can have."""
        return self.length if isinstance(self.length, int) else self.length[1]

    def draw_length(self, rng: random.Random) -> int:
        """The length of one record: `length`, or uniform in `[min, max]` (no draw for a fixed length)."""
        return self.length if isinstance(self.length, int) else rng.randint(*self.length)


class Generator(ABC):
    """Makes training records; subclasses set `description`, `Config`, `needs_tokenizer` and write `record`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type[GeneratorConfig]]
    needs_tokenizer: ClassVar[bool] = False  # lengths counted in a tokenizer's tokens

    def __init__(self, config: GeneratorConfig, tokenizer: PreTrainedTokenizerBase | None = None):
        if self.needs_tokenizer and tokenizer is None:
            raise ValueError(f"generator '{self.name}' counts tokens: give it a tokenizer")
        self.config = config
        self.tokenizer = tokenizer

    @property
    def stream(self) -> str:
        """The name of the records' random streams: the generator's, plus what a config changes all records by."""
        return self.name

    def rng(self, seed: int, index: int) -> random.Random:
        """The random stream of record `index`: `lch-train-{stream}-{seed}-{index}`, disjoint from evaluation's."""
        return random.Random(f"lch-train-{self.stream}-{seed}-{index}")

    @abstractmethod
    def record(self, seed: int, index: int) -> dict[str, Any]:
        """Record `index` of the set drawn with `seed`: `prompt`, `answer` and metadata."""

    def records(self, n: int, seed: int) -> Iterator[dict[str, Any]]:
        """The first `n` records; record `i` does not depend on `n`."""
        return (self.record(seed, index) for index in range(n))


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write one JSON object per line to `path` atomically (a temporary file, then a rename); return the count.

    Raises:
        UserError: `path` cannot be written.

    """
    path = Path(path)
    # Beside the target, so the rename stays on one file system; opened as usual, so it gets the usual mode.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    count = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        os.replace(temporary, path)
    except OSError as error:  # a folder in the way, no permission, a full disk
        raise UserError(f"cannot write '{path}': {error.strerror or error}") from None
    finally:
        temporary.unlink(missing_ok=True)  # still there only when writing failed
    return count


GENERATORS: Registry[type[Generator]] = Registry("generator", Generator, ("tasks.generated",))
register_generator = GENERATORS.register
