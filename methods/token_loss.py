"""What one training document costs, prediction by prediction: which tokens count, and against what.

The training loop decides the objective (`harness/training.py`: `lm`, `answer`, `distill`); a trainable
method's `backward_document(input_ids, token_loss)` computes its hidden states segment by segment as its
algorithm does and asks `token_loss` for the loss of each stretch of predictions, so every method trains
every objective the same way and none decides it itself. The document's loss is
`sum_t w_t * loss_t / sum_t w_t` over the predictions of tokens t = 1..T-1, where `loss_t` is
`-log p(x_t | ...)` (no teacher) or `KL(teacher_t || student_t)` (distillation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from methods.backbone import LOGITS_CHUNK


class TokenLoss:
    """Per-prediction weights of one document and, for distillation, the teacher's next-token log-probs.

    Args:
        input_ids: `[T]` the document's token ids (the targets of the NLL).
        weights: `[T]` weight of the prediction of token t (made at position t - 1); `weights[0]` is 0,
            as nothing predicts the first token.
        teacher: `[T, V]` log-probs of the teacher's distribution for token t (row 0 unused), or None: the
            loss of a prediction is the NLL of the token itself.
    """

    def __init__(self, input_ids: torch.Tensor, weights: torch.Tensor, teacher: torch.Tensor | None = None):
        if weights.shape != input_ids.shape or weights.ndim != 1 or float(weights[0]) != 0.0:
            raise ValueError("weights are [T] like input_ids, with weights[0] == 0 (nothing predicts the first token)")
        if teacher is not None and teacher.shape[0] != weights.shape[0]:
            raise ValueError(f"teacher has {teacher.shape[0]} rows for {weights.shape[0]} tokens")
        if bool((weights < 0).any()):
            raise ValueError("weights are >= 0")
        self.input_ids, self.weights, self.teacher = input_ids, weights.float(), teacher
        # A document with no weighted prediction (no token needing the long context) has loss 0, no gradient.
        self.total = float(self.weights.sum()) or 1.0

    @classmethod
    def every_token(cls, input_ids: torch.Tensor) -> TokenLoss:
        """The language-modelling loss: every prediction counts once (the mean NLL of tokens 1..T-1)."""
        weights = torch.ones(input_ids.shape, device=input_ids.device)
        weights[0] = 0
        return cls(input_ids, weights)

    def counts(self, first: int, count: int) -> bool:
        """Whether any of the predictions of tokens `first .. first + count - 1` has a weight."""
        return bool(self.weights[first : first + count].any())

    def stretch(self, backbone, hidden: torch.Tensor, first: int) -> torch.Tensor:
        """Weighted sum (not divided by `total`) of the losses of `hidden` predicting tokens `first`, `first + 1`, ….

        Logits are computed `LOGITS_CHUNK` rows at a time and recomputed in backward: a 16K-token document's
        logits over SmolLM2's 49K vocabulary are 3.2 GB in float32.

        Args:
            backbone: its output layer gives the logits (`backbone.logits`).
            hidden: `[n, D]` final hidden states; row i predicts token `first + i`.
            first: the index in the document of the token row 0 predicts (>= 1).
        """
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], LOGITS_CHUNK):
            rows = slice(first + start, first + min(start + LOGITS_CHUNK, hidden.shape[0]))
            weights = self.weights[rows].to(hidden.device)
            if not weights.any():
                continue
            piece = hidden[start : start + LOGITS_CHUNK]
            against = self.input_ids[rows] if self.teacher is None else self.teacher[rows]
            against = against.to(hidden.device)
            total = total + checkpoint(_weighted, backbone, piece, against, weights, use_reentrant=False)
        return total


def _weighted(backbone, hidden: torch.Tensor, against: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w · loss over rows: NLL of the target ids (`against` `[n]` integers) or KL to teacher log-probs (`[n, V]`)."""
    logits = backbone.logits(hidden).float()
    if against.dtype in (torch.int64, torch.int32):
        return (F.cross_entropy(logits, against, reduction="none") * weights).sum()
    student = torch.log_softmax(logits, dim=-1)
    kl = F.kl_div(student, against.float(), log_target=True, reduction="none").sum(-1)
    return (kl * weights).sum()
