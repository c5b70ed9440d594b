"""Auto-encoding: a text compressed into a method's memory and decoded back from the memory alone.

UIO-LLMs' check of its memory (Li et al. 2024, section 4.2, Table 1: BLEU-4 0.985 / 0.595 and ROUGE-L
0.993 / 0.762 at 8x / 32x compression of 1K-token MiniPile texts on Llama-2-7B). Here the texts are
windows of `length` tokens from the data directory's books (the PG19 test books by default), taken
round-robin: sample i is window i // B of book i % B. The method must offer `reconstruct(ids)`
(UIO: `length` = its segment); the reference is the text after its first token, which the repeat
token stands in for. Scores are on whitespace-separated words of the decoded texts: per sample,
BLEU-4 with add-one smoothing of the 2- to 4-gram precisions (Lin & Och, 2004) and ROUGE-L F1 (longest
common subsequence); the headline `bleu4` is corpus BLEU-4 over all samples (clipped n-gram counts
summed, one brevity penalty).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Literal

import torch

from harness.core.errors import UserError
from tasks.base import Instance, Score, Task, TaskConfig, register_task
from tasks.data import PG19_TEST_IDS, data_dir, read_book


class AutoencodeConfig(TaskConfig):
    """`documents`: `pg19_test` (the seven PG19 test books of the data dir) or `all` books."""

    documents: Literal["pg19_test", "all"] = "pg19_test"
    data_dir: str | None = None


def ngram_counts(hypothesis: list[str], reference: list[str], n: int) -> tuple[int, int]:
    """(clipped n-gram matches, n-grams in the hypothesis)."""
    hyp = Counter(tuple(hypothesis[i : i + n]) for i in range(len(hypothesis) - n + 1))
    ref = Counter(tuple(reference[i : i + n]) for i in range(len(reference) - n + 1))
    return sum(min(count, ref[gram]) for gram, count in hyp.items()), max(0, len(hypothesis) - n + 1)


def bleu4(matches: list[float], totals: list[float], hyp_len: float, ref_len: float, smooth: bool) -> float:
    """BLEU-4 from summed counts; `smooth` adds one to the 2- to 4-gram counts (sentence level)."""
    if hyp_len == 0:
        return 0.0
    logs = []
    for n, (match, total) in enumerate(zip(matches, totals, strict=True), start=1):
        extra = 1.0 if smooth and n > 1 else 0.0
        if match + extra == 0 or total + extra == 0:
            return 0.0
        logs.append(math.log((match + extra) / (total + extra)))
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(sum(logs) / 4)


def rouge_l(hypothesis: list[str], reference: list[str]) -> float:
    """ROUGE-L F1: longest common subsequence over the two lengths."""
    if not hypothesis or not reference:
        return 0.0
    previous = [0] * (len(reference) + 1)
    for word in hypothesis:
        current = [0]
        for j, other in enumerate(reference, start=1):
            current.append(previous[j - 1] + 1 if word == other else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hypothesis), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


@register_task("autoencode")
class Autoencode(Task):
    """Reconstruct a text from the method's memory of it; higher is better."""

    description = "auto-encoding: a text compressed into memory and decoded back from it alone (UIO-LLMs Table 1)"
    Config = AutoencodeConfig
    headline = "bleu4"
    chance = 0.0

    @classmethod
    def check_config(cls, config: AutoencodeConfig) -> None:
        """The data directory has the books."""
        chosen_books(config)

    @classmethod
    def check_method(cls, config: AutoencodeConfig, method, method_config, length: int) -> None:
        """The method decodes from its memory (`reconstruct()`), one segment: `length` is its `segment`."""
        if not callable(getattr(method, "reconstruct", None)):
            raise UserError(
                f"autoencode needs a method with a memory to decode from (reconstruct()); {method.name} has none"
            )
        segment = getattr(method_config, "segment", None)
        if segment is not None and length != segment:
            raise UserError(
                f"autoencode reconstructs one segment: give length {segment} for {method.name}, not {length}"
            )

    def instances(self, length: int, n: int, seed: int) -> list[Instance]:
        """`n` windows of `length` tokens, round-robin over the books (`seed` unused: the order is fixed)."""
        books = [
            self.tokenizer(read_book(path), add_special_tokens=False).input_ids for path in chosen_books(self.config)
        ]
        out: list[Instance] = []
        for index in range(n):
            book, window = index % len(books), index // len(books)
            ids = books[book][window * length : (window + 1) * length]
            if len(ids) < length:
                break
            out.append(Instance(id=f"autoencode-{length}-{index}", input_ids=ids, target="", metadata={"book": book}))
        return out

    def evaluate(self, model, instance: Instance) -> Score:
        """Reconstruct the text from memory; BLEU-4 and ROUGE-L against the text after its first token."""
        tokens = model.reconstruct(torch.tensor(instance.input_ids))
        prediction = self.tokenizer.decode(tokens, skip_special_tokens=True)
        reference = self.tokenizer.decode(instance.input_ids[1:], skip_special_tokens=True)
        hyp, ref = prediction.split(), reference.split()
        counts = [ngram_counts(hyp, ref, n) for n in range(1, 5)]
        matches, totals = [float(c[0]) for c in counts], [float(c[1]) for c in counts]
        sentence = bleu4(matches, totals, len(hyp), len(ref), smooth=True)
        metrics = {"bleu4": sentence, "rouge_l": rouge_l(hyp, ref), "hyp_words": float(len(hyp)),
                   "ref_words": float(len(ref))}  # fmt: skip
        metrics.update({f"match{n}": m for n, m in enumerate(matches, start=1)})
        metrics.update({f"total{n}": t for n, t in enumerate(totals, start=1)})
        return Score(score=sentence, metrics=metrics, prediction=prediction, decode_tokens=len(tokens))

    def aggregate(self, scores: list[Score]) -> dict[str, float]:
        """Corpus BLEU-4 (headline), mean sentence BLEU-4 and mean ROUGE-L."""
        if not scores:
            return {"bleu4": float("nan"), "sentence_bleu4": float("nan"), "rouge_l": float("nan")}
        summed = {key: sum(s.metrics[key] for s in scores) for key in scores[0].metrics}
        corpus = bleu4([summed[f"match{n}"] for n in range(1, 5)], [summed[f"total{n}"] for n in range(1, 5)],
                       summed["hyp_words"], summed["ref_words"], smooth=False)  # fmt: skip
        return {"bleu4": corpus, "sentence_bleu4": summed["bleu4"] / len(scores),
                "rouge_l": summed["rouge_l"] / len(scores), "samples": float(len(scores))}  # fmt: skip


def chosen_books(config: AutoencodeConfig):
    """The chosen books of the data directory, sorted by name."""
    root = data_dir(config.data_dir)
    if root is None or not (root / "books").is_dir():
        raise UserError("autoencode needs a data_dir with books/ (task option, LCH_DATA_DIR or ../shared/data)")
    books = sorted((root / "books").glob("*.txt"))
    if config.documents == "pg19_test":
        books = [book for book in books if book.name.split("_")[0] in PG19_TEST_IDS]
    if not books:
        raise UserError(f"autoencode: no {config.documents} books in {root / 'books'}")
    return books
