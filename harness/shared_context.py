"""Shared-context questions: a context prefilled once, each of its questions asked from a copy of the state after it.

SCBench's shared-context mode and kvpress's context/question split: a method that compresses its context
(memory, eviction, retrieval) must do so without knowing the questions, and the prefill is paid once for
all of them. A task marks the context with `Instance.context_tokens` (passkey's and BABILong's
`query_position: after`); consecutive instances with the same context ids share it. A method whose
`save_state` returns None cannot copy its state: its samples run the whole prompt each, as before, and say so.

Costs per question: `prefill_s` (and `prefill_flops`) is the question's own prefill (with the state copy
it starts from) plus the context's prefill divided by the questions that share it; both parts are kept in
the sample's metadata (`shared_context`), so a report can give the cost either way.
"""

from __future__ import annotations

from collections import Counter

import torch

from harness.metering import Metered
from tasks.base import Instance


class SharedContext:
    """The method's state after the current context, kept while the questions that share it run."""

    def __init__(self, method, instances: list[Instance]):
        """Serve `instances` (a cell's, in order) with `method`, reset (a copy of its empty state says if it copies)."""
        self.method = method
        self.questions = Counter(_context(instance) for instance in instances if instance.context_tokens)
        self.copies = bool(self.questions) and method.save_state() is not None
        self.context: tuple[int, ...] | None = None
        self.saved = None
        self.context_s = self.context_flops = 0.0

    def ask(self, metered: Metered, instance: Instance):
        """The model `instance`'s task should run: `metered` itself, or it with the context already prefilled."""
        if not instance.context_tokens or not self.copies:
            return metered
        context = _context(instance)
        if context != self.context:
            self.saved = None  # free the previous context's copy before the new prefill
            metered.timed("context_prefill_s", self.method.prefill, torch.tensor(context))
            self.context_s, self.context_flops = metered.costs.context_prefill_s, metered.costs.context_prefill_flops
            self.saved, self.context = self.method.save_state(), context
        else:
            metered.timed("prefill_s", self.method.load_state, self.saved)
        return AfterContext(metered, len(context))

    def details(self, instance: Instance, metered: Metered) -> dict | None:
        """What the sample's metadata says of its shared context (None: it had none), and its amortised prefill."""
        if not instance.context_tokens:
            return None
        if not self.copies:
            return {"copied": False}
        questions, costs = self.questions[self.context], metered.costs  # `ask` just set the context
        own, own_flops = costs.prefill_s or 0.0, costs.prefill_flops or 0.0
        costs.prefill_s = own + self.context_s / questions
        costs.prefill_flops = own_flops + self.context_flops / questions
        return {
            "copied": True, "questions": questions, "context_prefill_s": self.context_s, "question_prefill_s": own,
            "context_prefill_flops": self.context_flops, "question_prefill_flops": own_flops,
        }  # fmt: skip


def _context(instance: Instance) -> tuple[int, ...]:
    return tuple(instance.input_ids[: instance.context_tokens])


class AfterContext:
    """The method as a task sees it once the context is in its state: `prefill` feeds what follows the context."""

    def __init__(self, model, context_tokens: int):
        self._model = model
        self._skip = context_tokens

    def __getattr__(self, name):
        return getattr(self._model, name)

    def prefill(self, input_ids: torch.Tensor) -> None:
        """Prefill the question: the ids after the shared context."""
        self._model.prefill(input_ids[self._skip :])

    def score(self, *args, **kwargs):
        """Scoring reads a whole document; a task with a shared context only prefills and decodes."""
        raise RuntimeError("score() reads a whole document; it has no shared-context form")
