"""LongBench v1 metrics, the per-sample scoring rule, and the official averages.

Source: THUDM/LongBench @ 2e00731f `LongBench/metrics.py` and `LongBench/eval.py` (re-written, same
behaviour, same libraries: `rouge`, `jieba`, `fuzzywuzzy`). Every metric has the official signature
`fn(prediction, ground_truth, **kwargs) -> float` in [0, 1]; `score_prediction` applies the eval.py
rules (first line for few-shot datasets, max over gold answers) and `summarize` the averages of
the LongBench paper (per task category and overall).
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

EN_PUNCTUATION = frozenset(string.punctuation)
ZH_PUNCTUATION = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."  # noqa: E501

ALL_PUNCTUATION = EN_PUNCTUATION | frozenset(ZH_PUNCTUATION)


@functools.cache
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading messages are DEBUG lines on stderr
    return jieba


@functools.cache
def _fuzz():
    import warnings

    # Official requirements.txt installs fuzzywuzzy without python-Levenshtein, so `fuzz.ratio` runs on
    # difflib.SequenceMatcher; that is the reference behaviour and its warning is noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from fuzzywuzzy import fuzz
    return fuzz


def _cut(text: str) -> list[str]:
    return list(_jieba().cut(text, cut_all=False))


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation, articles and extra whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in EN_PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def normalize_zh_answer(text: str) -> str:
    """Lower case, drop ASCII and Chinese punctuation and all whitespace."""
    return "".join("".join(ch for ch in text.lower() if ch not in ALL_PUNCTUATION).split())


def f1_score(prediction: list[str], ground_truth: list[str], **kwargs: Any) -> float:
    """Bag-of-tokens F1 between two token lists."""
    same = sum((Counter(prediction) & Counter(ground_truth)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(ground_truth)
    return 2 * precision * recall / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """Token F1 after SQuAD normalisation (English QA, triviaqa)."""
    return f1_score(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def qa_f1_zh_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """F1 over jieba words, each stripped of punctuation, empty ones dropped (Chinese QA)."""
    pred = [word for word in (normalize_zh_answer(w) for w in _cut(prediction)) if word]
    gold = [word for word in (normalize_zh_answer(w) for w in _cut(ground_truth)) if word]
    return f1_score(pred, gold)


def rouge_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """ROUGE-L F of the `rouge` package; 0 when it raises (empty prediction, recursion on long text)."""
    from rouge import Rouge

    try:
        scores = Rouge().get_scores([prediction], [ground_truth], avg=True)
    except Exception:  # noqa: BLE001 - the official code returns 0 on any failure (bare except)
        return 0.0
    return scores["rouge-l"]["f"]


def rouge_zh_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """ROUGE-L F over jieba words joined by spaces."""
    return rouge_score(" ".join(_cut(prediction)), " ".join(_cut(ground_truth)))


def classification_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """1 / (number of classes named in the prediction) if the gold class is among them, else 0.

    A named class that is a strict substring of the gold label is dropped. The loop removes items from
    the list it iterates, so the item after a removed one is not examined: kept on purpose, it is the
    official behaviour and changes scores on trec (e.g. "Other location" vs "location" prefixes).
    """
    matches = [name for name in kwargs["all_classes"] if name in prediction]
    for name in matches:
        if name in ground_truth and name != ground_truth:
            matches.remove(name)  # noqa: B909 - official quirk, see the docstring
    return 1.0 / len(matches) if ground_truth in matches else 0.0


def _fraction_equal(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return sum(number == target for number in numbers) / len(numbers) if numbers else 0.0


def retrieval_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """Fraction of the integers in the prediction equal to N of the gold "Paragraph N"."""
    return _fraction_equal(prediction, re.findall(r"Paragraph (\d+)", ground_truth)[0])


def retrieval_zh_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """Fraction of the integers in the prediction equal to N of the gold "段落N"."""
    return _fraction_equal(prediction, re.findall(r"段落(\d+)", ground_truth)[0])


def count_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """Fraction of the integers in the prediction equal to the gold count."""
    return _fraction_equal(prediction, str(ground_truth))


def code_sim_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """`fuzz.ratio / 100` of the first prediction line with no backtick, `#` or `//` (empty if none)."""
    line = next((ln for ln in prediction.lstrip("\n").split("\n") if not ("`" in ln or "#" in ln or "//" in ln)), "")
    return _fuzz().ratio(line, ground_truth) / 100


DATASET2METRIC: dict[str, Callable[..., float]] = {
    "narrativeqa": qa_f1_score, "qasper": qa_f1_score, "multifieldqa_en": qa_f1_score,
    "multifieldqa_zh": qa_f1_zh_score, "hotpotqa": qa_f1_score, "2wikimqa": qa_f1_score, "musique": qa_f1_score,
    "dureader": rouge_zh_score, "gov_report": rouge_score, "qmsum": rouge_score, "multi_news": rouge_score,
    "vcsum": rouge_zh_score, "trec": classification_score, "triviaqa": qa_f1_score, "samsum": rouge_score,
    "lsht": classification_score, "passage_retrieval_en": retrieval_score, "passage_count": count_score,
    "passage_retrieval_zh": retrieval_zh_score, "lcc": code_sim_score, "repobench-p": code_sim_score,
}  # fmt: skip

# eval.py: the prediction of these datasets is cut to its first line before scoring.
FIRST_LINE = frozenset({"trec", "triviaqa", "samsum", "lsht"})

CATEGORIES = {
    "single_doc_qa": ("narrativeqa", "qasper", "multifieldqa_en"),
    "multi_doc_qa": ("hotpotqa", "2wikimqa", "musique"),
    "summarization": ("gov_report", "qmsum", "multi_news"),
    "few_shot": ("trec", "triviaqa", "samsum"),
    "synthetic": ("passage_count", "passage_retrieval_en"),
    "code": ("lcc", "repobench-p"),
    "single_doc_qa_zh": ("multifieldqa_zh",),
    "multi_doc_qa_zh": ("dureader",),
    "summarization_zh": ("vcsum",),
    "few_shot_zh": ("lsht",),
    "synthetic_zh": ("passage_retrieval_zh",),
}
# Leaderboard averages: mean of category means; code is shared by the English and Chinese tables.
EN_CATEGORIES = ("single_doc_qa", "multi_doc_qa", "summarization", "few_shot", "synthetic", "code")
ZH_CATEGORIES = ("single_doc_qa_zh", "multi_doc_qa_zh", "summarization_zh", "few_shot_zh", "synthetic_zh", "code")
EN16 = tuple(name for category in EN_CATEGORIES for name in CATEGORIES[category])
CATEGORY_OF = {name: category for category, names in CATEGORIES.items() for name in names}
E_BUCKETS = ((4000, "0-4k"), (8000, "4-8k"), (float("inf"), "8k+"))  # by the record's `length` (words/chars)


def score_prediction(dataset: str, prediction: str, answers: Iterable[str], all_classes: list[str] | None) -> float:
    """eval.py `scorer` for one sample, in [0, 1]: first-line rule, then the max over gold answers."""
    if dataset in FIRST_LINE:
        prediction = prediction.lstrip("\n").split("\n")[0]
    metric = DATASET2METRIC[dataset]
    return max((metric(prediction, gold, all_classes=all_classes) for gold in answers), default=0.0)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def summarize(samples: Iterable[tuple[str, float, float]], e: bool = False) -> dict[str, float]:
    """Averages over scored samples `(dataset, score x 100, record length)`, only over datasets present.

    Keys: each dataset's mean; `category/<name>` (mean of its datasets' means); `avg_en` / `avg_zh`
    (leaderboard: mean of the English / Chinese category means present, emitted when a dataset of that
    language is present); `avg_en16` (mean over the 16 English datasets present); `average` (mean of all
    dataset means present, the headline). With `e`, LongBench-E buckets `e/<bucket>/<dataset>` and
    `e/<bucket>` (mean over datasets of their bucket means).
    """
    per_dataset: dict[str, list[tuple[float, float]]] = {}
    for dataset, value, length in samples:
        per_dataset.setdefault(dataset, []).append((value, length))
    means = {name: _mean(v for v, _ in per_dataset[name]) for name in CATEGORY_OF if name in per_dataset}
    out = dict(means)
    categories = {c: _mean(means[n] for n in names if n in means) for c, names in CATEGORIES.items()
                  if any(n in means for n in names)}  # fmt: skip
    out.update({f"category/{c}": value for c, value in categories.items()})
    if any(CATEGORY_OF[n] in EN_CATEGORIES and CATEGORY_OF[n] != "code" for n in means):
        out["avg_en"] = _mean(categories[c] for c in EN_CATEGORIES if c in categories)
    if any(CATEGORY_OF[n] in ZH_CATEGORIES and CATEGORY_OF[n] != "code" for n in means):
        out["avg_zh"] = _mean(categories[c] for c in ZH_CATEGORIES if c in categories)
    if any(n in EN16 for n in means):
        out["avg_en16"] = _mean(means[n] for n in EN16 if n in means)
    out["average"] = _mean(means.values()) if means else float("nan")
    if e:
        out.update(_buckets(per_dataset))
    return out


def _buckets(per_dataset: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for _, bucket in E_BUCKETS:
        dataset_means = {}
        for name, values in per_dataset.items():
            inside = [v for v, length in values if _bucket(length) == bucket]
            if inside:
                dataset_means[name] = out[f"e/{bucket}/{name}"] = _mean(inside)
        if dataset_means:
            out[f"e/{bucket}"] = _mean(dataset_means.values())
    return out


def _bucket(length: float) -> str:
    return next(name for limit, name in E_BUCKETS if length < limit)
