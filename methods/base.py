"""The method contract (`LongContextModel`), the method config base, and the method registry."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from harness.core.registry import Registry

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class MethodConfig(BaseModel):
    """Base of every method config: defaults are the official ones; deviations go in the docstring.

    `checkpoint_fields` names the fields that hold a checkpoint directory: a sweep cell's identity hashes
    that directory's contents, so retraining into the same folder makes new cells (`harness.sweep`).
    `checkpoint_options` names the options a checkpoint fixes (shapes, scales, the RoPE factor a decoder
    was trained with): evaluation takes them from the checkpoint's `training.json` and refuses a
    contradicting one (`harness.checkpoints`). `later_options` names options added after stores were
    written whose default computes what the method did before: at their default they stay out of a
    cell's identity, so those stores resume.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    checkpoint_fields: ClassVar[tuple[str, ...]] = ()
    checkpoint_options: ClassVar[tuple[str, ...]] = ()
    later_options: ClassVar[tuple[str, ...]] = ()


class InputTooLong(Exception):
    """The input exceeds the method's `max_context`; the runner records the cell as `over_length`."""


class LongContextModel(ABC):
    """One long-context method applied to one frozen base model, holding per-document state.

    Worked example (token level): for a document `[a, b, c, d]`, `score` returns
    `[log p(b|a), log p(c|a,b), log p(d|a,b,c)]`; `reset(); prefill([a, b]); decode(2, stop_ids=[])`
    returns the greedy continuation `[x, y]` of `a b`, and `decode` may be called again to go on.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    sources: ClassVar[str] = ""  # paper and official code, cited in reports
    Config: ClassVar[type[MethodConfig]]
    max_context: int | None = None

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: MethodConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config

    @abstractmethod
    def reset(self) -> None:
        """Forget the previous document: memories, caches, positions."""

    @abstractmethod
    def score(self, input_ids: torch.Tensor, greedy: bool = False):
        """`[T]` ids -> `[T-1]` float32 log p(x_t | x_<t) for t >= 1, streamed in the method's own segments.

        With `greedy`, a pair: the log-probs and `[T-1]` bools, whether x_t is the argmax of its
        prediction (lm-eval's `is_greedy`, from the same logits).
        """

    @abstractmethod
    def prefill(self, input_ids: torch.Tensor) -> None:
        """Consume `[T]` prompt ids and build state; the next `decode` continues after them.

        A second call continues the same document, its ids after everything read or decoded so far (a question
        after a shared context, `harness.shared_context`); `reset` starts a new one.
        """

    @abstractmethod
    def decode(self, max_new_tokens: int, stop_ids: list[int]) -> list[int]:
        """Greedy continuation from the state, stopping after a token in `stop_ids` (which is returned)."""

    @abstractmethod
    def state_bytes(self) -> int:
        """Bytes of KV cache / memory held right now for the current document."""

    # The attributes `reset` sets: the document's whole state, what `save_state` copies. Empty: the method
    # cannot copy its state, and shared-context questions run it the old way (the whole prompt each time).
    document_state: ClassVar[tuple[str, ...]] = ()

    def save_state(self) -> dict[str, Any] | None:
        """A copy of the document's state now, for `load_state`; None when the method cannot copy its state.

        Only the state is copied: weights, the backbone and the config stay shared, so a copy costs what
        `state_bytes` says (plus spare buffer capacity).
        """
        if not self.document_state:
            return None
        return _copied({name: getattr(self, name) for name in self.document_state}, self)

    def load_state(self, state: dict[str, Any]) -> None:
        """Go back to a state `save_state` returned; the saved copy stays untouched, to be loaded again."""
        for name, value in _copied(state, self).items():
            setattr(self, name, value)

    def host_state_bytes(self) -> int:
        """Bytes of the document's state kept in host memory off the compute device (InfLLM's offloaded blocks)."""
        return 0

    @property
    def untrained(self) -> bool:
        """Whether the method needs trained weights and runs without them (stored per sample, labelled in reports).

        Training-free methods say False; a trainable one without a checkpoint says True.
        """
        return False

    @property
    def variant(self) -> str | None:
        """A non-official variant an option asked for (stored per sample, added to the label in reports), or None."""
        return None

    def beyond_trained_memory(self, length: int) -> bool:
        """True when a `length`-token input makes the method read more memories than its checkpoint trained with.

        Stored per sample and marked in reports, as `beyond_trained_window`; methods without a memory say False.
        """
        return False

    @property
    def causal_score(self) -> bool:
        """Whether `score()` keeps every log-prob independent of the tokens after it (stored per sample).

        Every method scores causally by default; an official look-ahead kept as an option says False
        here, and its samples are marked in the store and the report.
        """
        return True

    def beyond_trained_window(self, length: int) -> bool:
        """True when a `length`-token input puts positions past the base model's trained window.

        The default is full attention's answer; methods that bound or rescale positions override it.
        """
        return length > self.model.config.max_position_embeddings


def _copied(state: dict[str, Any], method: LongContextModel) -> dict[str, Any]:
    """A deep copy of `state` that shares, not copies, everything the method holds outside it (weights, backbone)."""
    import torch

    shared: dict[int, Any] = {}
    for name, value in vars(method).items():
        if name in method.document_state:
            continue
        shared[id(value)] = value
        if isinstance(value, torch.nn.Module):
            shared.update((id(module), module) for module in value.modules())
    return copy.deepcopy(state, shared)


def greedy_decode(
    next_logits: torch.Tensor | None, feed: Callable[[int], torch.Tensor], max_new_tokens: int, stop_ids: list[int]
) -> tuple[list[int], torch.Tensor]:
    """The greedy loop every method shares.

    Args:
        next_logits: `[V]` logits after the prompt (None before any prefill).
        feed: runs one token through the method's state and returns the next `[V]` logits.
        max_new_tokens: most tokens to generate.
        stop_ids: generation ends after one of these (it is returned and not fed).

    Returns:
        The generated tokens and the logits that follow them.
    """
    if next_logits is None:
        raise RuntimeError("decode() needs prefill() first")
    tokens: list[int] = []
    for _ in range(max_new_tokens):
        token = int(next_logits.argmax())
        tokens.append(token)
        if token in stop_ids:
            break
        next_logits = feed(token)
    return tokens, next_logits


METHODS: Registry[type[LongContextModel]] = Registry("method", LongContextModel, ("methods.baselines", "methods.uio"))
register_method = METHODS.register
