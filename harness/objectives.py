"""The training objectives: which predictions of a document count (`--loss`) and against what (`--objective`).

* `lm` with `--loss all`: every token's NLL, each method's official loss (no `TokenLoss` is passed, so
  UIO keeps its per-segment means); books and plain texts.
* `lm` with `--loss answer` (the `answer` objective): the mean NLL of a prompt/answer record's answer
  tokens and its EOS only, as BABILong's RMT and supervised fine-tuning train; the prompt's tokens are
  context, with no label.
* `distill`: the method (the student, reading its memory) matches, token by token, the next-token
  distribution of a teacher: the same frozen base model reading the whole document with full attention,
  inside its trained window. The loss is KL(teacher || student) per prediction, over every token or the
  answer tokens or the long-context tokens (`--loss`). AHN (arXiv 2510.07318) trains its memories this way.
* `--loss long` (either objective, for a method with segments): only the tokens that need context from
  before their own segment, found as LongPPL (arXiv 2410.23771) finds its key tokens: the base model's
  log-prob of the token with the whole document before it gains more than `LONG_GAIN` nats over the same
  model reading only the token's own segment, and stays above `LONG_FLOOR` (LongPPL's α = 2, β = -2;
  LongPPL's local context is a 4K sliding window, here the method's segment, the context a memory method
  has without its memory). It costs one more no-grad forward over the segments. The teacher's log-probs
  are computed once per document, in the step (one no-grad forward of the base model; its seconds are
  logged as `teacher_seconds`), and not kept: `[T, vocab]` float32 is 200 MB for a 1K-token document of
  SmolLM2.
"""

from __future__ import annotations

import torch

from harness.core.errors import UserError
from methods.token_loss import TokenLoss

LONG_GAIN, LONG_FLOOR = 2.0, -2.0  # LongPPL's key-token thresholds (nats): α on the gain, β on the log-prob


def document_loss(spec, example, model, segment: int | None = None) -> TokenLoss | None:
    """The `TokenLoss` of one training document under `spec`'s objective (None: the method's official loss).

    Args:
        spec: the `TrainSpec` (its `objective` and `loss`).
        example: a `harness.training_data.Example` (ids, where its answer starts).
        model: the frozen base model, the distillation teacher.
        segment: the method's segment, the local context of `--loss long`.
    """
    if spec.objective == "lm" and spec.loss == "all":
        return None
    ids = example.ids.to(model.device)
    teacher = teacher_logprobs(model, ids) if spec.teacher else None
    weights = torch.ones(ids.shape, device=ids.device)
    if spec.loss == "answer":
        weights[: example.answer] = 0
    if spec.loss == "long":
        weights = long_context_tokens(model, ids, teacher, segment).float()
    weights[0] = 0
    return TokenLoss(ids, weights, teacher if spec.objective == "distill" else None)


@torch.no_grad()
def long_context_tokens(model, input_ids: torch.Tensor, teacher: torch.Tensor, segment: int) -> torch.Tensor:
    """`[T]` bools: the tokens whose log-prob gains > `LONG_GAIN` nats from the context before their segment.

    Args:
        model: the base model.
        input_ids: `[T]` token ids.
        teacher: `[T, V]` the base model's log-probs with the whole document before each token.
        segment: the local context: each token sees only the tokens of its own segment before it.
    """
    full = teacher.gather(1, input_ids[:, None])[:, 0]
    local = torch.zeros_like(full)
    for start in range(0, input_ids.numel(), segment):
        piece = input_ids[start : start + segment]
        if piece.numel() > 1:
            rows = teacher_logprobs(model, piece)[1:]
            local[start + 1 : start + piece.numel()] = rows.gather(1, piece[1:, None])[:, 0]
    needs = (full - local > LONG_GAIN) & (full > LONG_FLOOR)
    needs[:segment] = False  # the first segment's tokens have no context before their segment
    return needs


@torch.no_grad()
def teacher_logprobs(model, input_ids: torch.Tensor) -> torch.Tensor:
    """`[T, V]` float32: row t is the base model's log-distribution of token t given tokens < t (row 0 is 0).

    Args:
        model: a Hugging Face causal LM (the frozen base), full attention over the whole document.
        input_ids: `[T]` token ids.
    """
    logits = model(input_ids[None]).logits[0, :-1].float()
    rows = torch.log_softmax(logits, dim=-1)
    return torch.cat([rows.new_zeros(1, rows.shape[1]), rows])


def check_teacher_window(spec, model) -> None:
    """The teacher (distillation's, `--loss long`'s) reads each document whole, inside the base model's window."""
    window = model.config.max_position_embeddings
    longest = max(stage.seq_len for stage in spec.plan)
    if longest > window:
        why = "--objective distill" if spec.objective == "distill" else "--loss long"
        raise UserError(
            f"{why}: documents of {longest} tokens are past the teacher's trained window {window} "
            "(the base model with full attention); train on shorter documents"
        )
