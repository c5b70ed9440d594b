"""The task contract (`Task`, `Instance`, `Score`), the task config base, and the task registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from harness.core.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from methods.base import LongContextModel


class TaskConfig(BaseModel):
    """Base of every task config.

    Every field that changes numbers (protocols, policies) lives here, so it is hashed into the
    cell id and stored with every result.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Options added after stores were written, whose default asks for what the task did before: at their
    # default they stay out of a cell's identity, so those stores resume (as `MethodConfig.later_options`).
    later_options: ClassVar[tuple[str, ...]] = ()


@dataclass
class Instance:
    """One evaluation sample: token ids (exact length in the evaluated tokenizer) and what to score against."""

    id: str
    input_ids: list[int]
    target: str
    max_new_tokens: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    # The first `context_tokens` ids are a context that questions share (`query_position: after`): the runner
    # prefills it once, copies the method's state, and feeds each question from a copy. 0: one prompt.
    context_tokens: int = 0


@dataclass
class Score:
    """Per-sample result: the headline value, all metrics, and what the model produced."""

    score: float
    metrics: dict[str, float]
    prediction: str = ""
    decode_tokens: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # non-scalar per-sample data (curves), stored as JSON


class Task(ABC):
    """A task. Instances are deterministic given (config, tokenizer, length, seed, index).

    Subclasses set `headline` (the metric that `Score.score` holds and `aggregate` reports),
    `higher_is_better`, `version` (bumped when instances or scoring change, so old results are not
    mixed with new ones) and, for tasks whose length is a budget rather than a generated size,
    `default_lengths` used when a sweep gives none, and for tasks that have a shortest form (BABILong's
    facts without background) `length_zero`, which says what a cell of length 0 runs.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type[TaskConfig]]
    headline: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    chance: ClassVar[float | None] = None  # the headline of a model that knows nothing; None: no such level
    version: ClassVar[int] = 1
    default_lengths: ClassVar[tuple[int, ...]] = ()
    length_zero: ClassVar[str | None] = None  # what length 0 means (BABILong: the facts alone); None: no length 0

    def __init__(self, config: TaskConfig, tokenizer: PreTrainedTokenizerBase):
        self.config = config
        self.tokenizer = tokenizer

    @classmethod  # noqa: B027 - an optional hook, not abstract: most tasks have nothing to check
    def check_config(cls, config: TaskConfig) -> None:
        """Check what `config` points at (data files) cheaply, when the sweep is validated.

        Called before any model is loaded or result stored, so a bad path is a one-line error rather
        than a failed cell. Raise `UserError`; the default checks nothing.
        """

    @classmethod  # noqa: B027 - an optional hook, not abstract: most tasks run with any method
    def check_method(cls, config: TaskConfig, method: type[LongContextModel], method_config: Any, length: int) -> None:
        """Check that `method` (its class and config) can run this task at `length`, when the sweep is validated.

        Raise `UserError` for a pairing that can only fail (a task that needs something of the method), so it
        stops before anything is stored; the default accepts every method.
        """

    @classmethod
    def report_name(cls, config: dict[str, Any]) -> str:
        """How reports name cells of this task with this (stored) config: the task name, or `name:detail`.

        A task whose config selects what is measured (lm-eval's task list) adds it, so reports do not
        pool different benchmarks under one name.
        """
        return cls.name

    @abstractmethod
    def instances(self, length: int, n: int, seed: int) -> list[Instance]:
        """The first `n` instances of `length` tokens; instance `i` does not depend on `n`."""

    @abstractmethod
    def evaluate(self, model: LongContextModel, instance: Instance) -> Score:
        """Run `model` (already reset) on `instance` and score it."""

    def aggregate(self, scores: list[Score]) -> dict[str, float]:
        """Task-level numbers; by default the mean of every per-sample metric."""
        keys = sorted({key for score in scores for key in score.metrics})
        return {key: sum(s.metrics.get(key, 0.0) for s in scores) / max(len(scores), 1) for key in keys}


TASKS: Registry[type[Task]] = Registry("task", Task, ("tasks",))
register_task = TASKS.register
