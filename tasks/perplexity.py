"""Long-document perplexity to 100K+ tokens, with the scoring protocol written into every result.

Documents are PG19 test books (Rae et al., 2019), read
from `<data_dir>/books/` (shared/data/SOURCES.md) or, without a data directory, streamed from the
hub (`deepmind/pg19`, split test). Protocols (`protocol`):

* `segment` (P6, UIO-LLMs / RMT): one `model.score(ids)` over the whole document; the method carries
  its state across its own segments and scores every token after the first exactly once.
* `sliding` (P2, HF perplexity guide, Activation Beacon `eval_lm.py`): the model is reset before
  every window; each window predicts `stride` new tokens, each with at least `window - stride + 1`
  tokens of context, except the first window, which predicts its first `window` tokens.
* `disjoint` (P1, lm-eval `loglikelihood_rolling`, `lm_eval/utils.py::get_rolling_token_windows`
  with `context_len=1`): `sliding` with `stride == window`: windows of `window` predicted tokens,
  each conditioned on the one token before it; the last window is left-extended to a full context.

Convention: `window` counts the tokens a prediction may condition on (lm-eval's `max_length`), so a
window is one `score()` call over at most `window + 1` ids (the HF guide's `max_length` would be
`window + 1`). Every protocol scores each of the `length - 1` tokens after the first exactly once.
Deviation from lm-eval: the document's own first token (BOS when the tokenizer adds one) is the
prefix and is not scored, instead of scoring it after an extra EOT prefix.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from pydantic import field_validator, model_validator

from harness.core.errors import UserError
from tasks import token_nll
from tasks.base import Instance, Score, Task, TaskConfig, register_task
from tasks.data import PG19_TEST_IDS, data_dir, read_book
from tasks.tokens import bos_prefix

HUB_DATASET = "deepmind/pg19"


class PerplexityConfig(TaskConfig):
    """Documents, protocol and position buckets; all hashed into the cell id and stored per result.

    `documents`: `pg19_test` (the seven PG19 test books of the data dir, or the hub's PG19 test
    split when there is no data dir), `all` (every book of `<data_dir>/books/`), or a list of file
    stems (an id prefix such as `145` also matches `145_middlemarch`).
    `window`/`stride` are used by `sliding` (0 < stride <= window) and `disjoint` (window only).
    `bucket`: width in tokens of the per-position NLL curve stored per sample.
    `allow_noncausal`: score with a method whose `score()` looks ahead (InfLLM's `score_lookahead`);
    refused by default, since such a perplexity is optimistic against every causal method.
    """

    documents: str | list[str] = "pg19_test"
    protocol: Literal["segment", "sliding", "disjoint"] = "segment"
    window: int | None = None
    stride: int | None = None
    bucket: int = 4096
    data_dir: str | None = None
    allow_noncausal: bool = False

    @field_validator("documents", mode="before")
    @classmethod
    def _stems(cls, value):
        # YAML and `--task-opt documents=2544` read a bare id as an int.
        if isinstance(value, int | float):
            return str(value)
        if isinstance(value, list):
            return [str(v) for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> PerplexityConfig:
        if self.bucket < 1:
            raise ValueError(f"bucket must be >= 1, got {self.bucket}")
        if self.protocol == "segment" and (self.window is not None or self.stride is not None):
            raise ValueError("window/stride apply to protocol sliding or disjoint, not segment")
        if self.protocol != "segment" and (self.window is None or self.window < 1):
            raise ValueError(f"protocol {self.protocol} needs window >= 1 (got {self.window})")
        if self.protocol == "sliding" and (self.stride is None or not 0 < self.stride <= self.window):
            raise ValueError(f"protocol sliding needs 0 < stride <= window (got stride={self.stride})")
        if self.protocol == "disjoint" and self.stride not in (None, self.window):
            raise ValueError("protocol disjoint has stride == window; leave stride out")
        return self


def windows(length: int, window: int | None, stride: int | None) -> Iterator[tuple[int, int, int]]:
    """Spans of one document's `score()` calls, as lm-eval's rolling windows over ids[1:] with ids[0] as prefix.

    Args:
        length: tokens in the document (ids[0] is never predicted).
        window: most tokens a prediction conditions on; None = one call over the whole document.
        stride: new tokens predicted per window after the first; None = `window` (disjoint).

    Yields:
        `(begin, end, new)`: call `score(ids[begin:end])` and keep its last `new` log-probs, which
        predict positions `end - new .. end - 1`. The `new` counts sum to `length - 1`.

    """
    if window is None:
        yield 0, length, length - 1
        return
    stride = stride or window
    predicted = min(window + 1, length)  # first window: ids[0] as prefix, predict the next `window` tokens
    yield 0, predicted, predicted - 1
    while predicted < length:
        new = min(stride, length - predicted)
        end = predicted + new
        yield max(0, end - window - 1), end, new
        predicted = end


def position_curve(nll: torch.Tensor, bucket: int) -> dict:
    """NLL sums and token counts per bucket of document positions.

    Args:
        nll: `[T-1]` float64 negative log-probs of positions 1..T-1.
        bucket: bucket width in tokens; bucket `b` holds positions `b*bucket .. (b+1)*bucket - 1`.

    """
    index = torch.arange(1, nll.numel() + 1) // bucket
    size = int(index[-1]) + 1 if nll.numel() else 0
    sums = torch.bincount(index, weights=nll, minlength=size)
    counts = torch.bincount(index, minlength=size)
    return {"bucket": bucket, "nll_sum": sums.tolist(), "tokens": counts.tolist()}


def local_books(config: PerplexityConfig) -> list[tuple[str, Path]] | None:
    """`(stem, path)` of the chosen books of the data directory, sorted by id; None means "stream from the hub".

    Raises:
        UserError: the data directory is missing or has no books, a chosen book is absent, or
            `documents` other than `pg19_test` is asked for without a data directory.

    """
    root = data_dir(config.data_dir)
    if root is None:
        if config.documents != "pg19_test":
            raise UserError(f"perplexity: documents={config.documents} needs a data_dir with books/")
        return None
    books = root / "books"
    files = {p.stem: p for p in books.glob("*.txt")} if books.is_dir() else {}
    if not files:
        raise UserError(f"perplexity: no books (*.txt) in {books}; see shared/data/SOURCES.md")
    wanted = config.documents
    if wanted == "all":
        chosen = list(files)
    elif wanted == "pg19_test":  # whichever of the seven are present (a user's folder may hold a subset)
        chosen = [s for s in files if s.split("_")[0] in PG19_TEST_IDS]
        if not chosen:
            raise UserError(f"perplexity: no PG19 test book (ids {', '.join(PG19_TEST_IDS)}) in {books}")
    else:
        wanted = [wanted] if isinstance(wanted, str) else wanted
        chosen = [s for s in files if s in wanted or s.split("_")[0] in wanted]
        missing = [w for w in wanted if not any(s == w or s.split("_")[0] == w for s in chosen)]
        if missing:
            raise UserError(f"perplexity: no book {missing} in {books}. Valid: {', '.join(sorted(files))}")
    return [(stem, files[stem]) for stem in sorted(chosen, key=lambda s: (s.split("_")[0], s))]


@register_task("perplexity")
class Perplexity(Task):
    """Perplexity of long books truncated to exactly `length` tokens; lower is better."""

    description = "long-document perplexity (PG19 test books), protocols segment / sliding / disjoint"
    Config = PerplexityConfig
    headline = "perplexity"
    higher_is_better = False

    @classmethod
    def check_config(cls, config: PerplexityConfig) -> None:
        """Check the data directory and that it holds the asked-for books (a directory listing, no reading)."""
        local_books(config)

    def _documents(self) -> Iterator[tuple[str, str]]:
        """`(stem, text)` in a fixed order: books sorted by id as strings, PG19's own file order."""
        books = local_books(self.config)
        if books is None:
            yield from self._hub_documents()
            return
        for stem, path in books:
            yield stem, read_book(path)

    def _hub_documents(self) -> Iterator[tuple[str, str]]:
        """PG19 test books streamed from the hub, in the split's order (already header-free)."""
        try:
            from datasets import load_dataset

            stream = iter(load_dataset(HUB_DATASET, split="test", streaming=True))
            first = next(stream)
        except Exception as error:  # noqa: BLE001 - any hub failure is the same one-line advice
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(
                "perplexity: no data_dir (task option, LCH_DATA_DIR or ../shared/data) and loading "
                f"{HUB_DATASET} test from the hub failed: {message}"
            ) from None
        for row in itertools.chain([first], stream):
            yield str(row.get("book_id") or row.get("short_book_title")), row["text"]

    def instances(self, length: int, n: int, seed: int) -> list[Instance]:
        """Build the first `n` documents with >= `length` tokens, each truncated to exactly `length` tokens.

        `seed` is unused: the order is fixed so sample `i` is the same book for every method.
        """
        if length < 2:
            raise UserError(f"perplexity needs length >= 2, got {length}")
        bos = bos_prefix(self.tokenizer)
        out: list[Instance] = []
        skipped = 0
        for stem, text in self._documents():
            if len(out) == n:
                break
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            if len(bos) + len(ids) < length:
                skipped += 1
                continue
            body = ids[: length - len(bos)]
            out.append(
                Instance(
                    id=f"perplexity-{length}-{stem}",
                    input_ids=bos + body,
                    target="",
                    metadata={"document": stem, "chars": len(self.tokenizer.decode(body)), "skipped_before": skipped},
                )
            )
        if len(out) < n:
            warnings.warn(
                f"perplexity: only {len(out)} of {n} requested documents have >= {length} tokens "
                f"({skipped} shorter skipped)",
                stacklevel=2,
            )
        return out

    def evaluate(self, model, instance: Instance) -> Score:
        """Score the document under the configured protocol; NLL summed in float64."""
        ids = torch.tensor(instance.input_ids)
        config = self.config
        if not model.causal_score and not config.allow_noncausal:
            raise UserError(
                f"perplexity: {model.name}'s score() looks ahead at later tokens (its options say so); "
                "set the task option allow_noncausal=true to measure it anyway"
            )
        parts = []
        for begin, end, new in windows(ids.numel(), config.window, config.stride):
            if config.protocol != "segment":
                model.reset()  # each window is a fresh document: no state from earlier windows
            logprobs = model.score(ids[begin:end])
            parts.append(logprobs[logprobs.numel() - new :].double().cpu())
        nll = -torch.cat(parts)
        if nll.numel() != ids.numel() - 1:
            raise RuntimeError(f"scored {nll.numel()} tokens, expected {ids.numel() - 1}: score() broke its contract")
        total = float(nll.sum())
        perplexity = math.exp(total / nll.numel())
        return Score(
            score=perplexity,
            metrics={"perplexity": perplexity, "nll_sum": total, "tokens": float(nll.numel())},
            details={
                "position_nll": position_curve(nll, config.bucket),
                "token_nll": token_nll.encode(nll.numpy()),  # per token, for the per-token gain of memory
                "skipped_before": instance.metadata.get("skipped_before", 0),
            },
        )

    def aggregate(self, scores: list[Score]) -> dict[str, float]:
        """Token-weighted perplexity (headline), mean per-document perplexity, counts, and `nll@<start>` curve.

        The curve and `skipped_documents` come from each score's `details` (stored sample metadata).
        """
        tokens = sum(s.metrics["tokens"] for s in scores)
        nll = sum(s.metrics["nll_sum"] for s in scores)
        per_document = [s.metrics["perplexity"] for s in scores]
        out = {
            "perplexity": math.exp(nll / tokens) if tokens else float("nan"),
            "mean_document_perplexity": sum(per_document) / len(per_document) if scores else float("nan"),
            "tokens": float(tokens),
            "documents": float(len(scores)),
            "skipped_documents": float(max((s.details.get("skipped_before", 0) for s in scores), default=0)),
        }
        curves = [s.details["position_nll"] for s in scores if "position_nll" in s.details]
        if curves:
            width = curves[0]["bucket"]
            size = max(len(c["tokens"]) for c in curves)
            sums, counts = [0.0] * size, [0] * size
            for curve in curves:
                for b, (s, c) in enumerate(zip(curve["nll_sum"], curve["tokens"], strict=True)):
                    sums[b] += s
                    counts[b] += c
            out.update({f"nll@{b * width}": sums[b] / counts[b] for b in range(size) if counts[b]})
        return out
