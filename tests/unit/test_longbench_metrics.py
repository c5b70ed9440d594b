"""LongBench v1 metrics on hand-checked pairs, the eval.py scoring rules, and the task-level averages."""

from __future__ import annotations

import math

import pytest

from tasks.base import Score
from tasks.longbench import metrics as m
from tasks.longbench.task import LongBench, LongBenchConfig

CLASSES = ["Location", "City", "Country", "Other location"]


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        # normalised "eiffel tower" vs "eiffel tower in paris": 2 common, P = 2/2, R = 2/4, F1 = 2*1*.5/1.5 = 2/3
        ("The Eiffel Tower", "Eiffel Tower in Paris", 2 / 3),
        # punctuation, case and the article vanish: "paris" vs "paris" -> 1
        ("Paris.", "the paris", 1.0),
        # "cat cat dog" vs "cat": bag overlap min(2, 1) = 1, P = 1/3, R = 1, F1 = 2*(1/3)/(4/3) = 1/2
        ("cat cat dog", "cat", 0.5),
        ("", "anything", 0.0),
    ],
)
def test_qa_f1_score(prediction, gold, expected):
    assert m.qa_f1_score(prediction, gold) == pytest.approx(expected)


def test_qa_f1_zh_score():
    # jieba: 北京 / ， / 中国 -> punctuation removed -> [北京, 中国] vs [北京]: P = 1/2, R = 1, F1 = 2/3
    assert m.qa_f1_zh_score("北京，中国", "北京") == pytest.approx(2 / 3)
    assert m.qa_f1_zh_score("北京。", "北京") == pytest.approx(1.0)
    assert m.qa_f1_zh_score("上海", "北京") == 0.0


def test_rouge_score():
    # rouge counts unique words: hyp {a, cat, sat, on, mats} 5, ref {a, cat, is, on, mats} 5, LCS a cat on mats = 4;
    # R = P = 0.8, F = 2 * 0.64 / 1.6 = 0.8 (the library adds 1e-8 to the denominator)
    assert m.rouge_score("a cat sat on mats", "a cat is on mats") == pytest.approx(0.8, abs=1e-7)
    # an empty prediction makes the library raise; the official code returns 0
    assert m.rouge_score("", "a cat") == 0.0


def test_rouge_zh_score():
    # jieba: 我 / 爱 / 北京 vs 我 / 爱 / 北京 / 天安门: LCS 3, P = 3/3, R = 3/4, F = 2 * .75 / 1.75 = 6/7
    assert m.rouge_zh_score("我爱北京", "我爱北京天安门") == pytest.approx(6 / 7, abs=1e-7)


def test_classification_score():
    assert m.classification_score("City", "City", all_classes=CLASSES) == 1.0
    # two classes named, the gold among them: 1/2
    assert m.classification_score("City or Country", "City", all_classes=CLASSES) == 0.5
    # "location" is named too but is a strict substring of the gold "Other location", so it is dropped: 1/1
    assert m.classification_score("Other location", "Other location", all_classes=["location", "Other location"]) == 1.0
    assert m.classification_score("Country", "City", all_classes=CLASSES) == 0.0


def test_classification_score_keeps_the_official_removal_quirk():
    # matches [a, b, abc]; "a" is a strict substring of the gold "abc" and is removed, and the loop then skips
    # "b" (list mutated while iterated), so [b, abc] remain: 1/2. A clean implementation would give 1.
    assert m.classification_score("abc", "abc", all_classes=["a", "b", "abc"]) == 0.5


def test_retrieval_and_count_scores():
    assert m.retrieval_score("Paragraph 3", "Paragraph 3") == 1.0
    assert m.retrieval_score("Paragraph 3 or Paragraph 12", "Paragraph 3") == 0.5  # integers [3, 12]
    assert m.retrieval_score("I do not know", "Paragraph 3") == 0.0
    assert m.retrieval_zh_score("答案是段落5和段落6", "段落5") == 0.5
    assert m.count_score("There are 7 unique paragraphs", "7") == 1.0
    assert m.count_score("7, 8 or 9", "7") == pytest.approx(1 / 3)


def test_code_sim_score():
    # the first line without `#`, `//` or a backtick is compared: identical -> 1
    assert m.code_sim_score("# comment\n    return x + 1\nfoo", "    return x + 1") == 1.0
    # difflib ratio of "abcd" vs "abce": 2 * 3 matches / 8 chars = 0.75
    assert m.code_sim_score("abcd", "abce") == pytest.approx(0.75)
    assert m.code_sim_score("// only comments", "x = 1") == 0.0


def test_score_prediction_first_line_and_max_over_answers():
    # trec keeps the first line only: "Location" alone -> 1 (both lines would name two classes -> 1/2)
    assert m.score_prediction("trec", "\nLocation\nCity", ["Location"], CLASSES) == 1.0
    assert m.score_prediction("lcc", "Location City", ["Location"], None) < 1.0
    # max over gold answers, whatever their order: "paris" vs "city of paris" is only 1/2
    assert m.score_prediction("triviaqa", "Paris", ["City of Paris", "Paris"], None) == 1.0


def test_summarize_category_and_leaderboard_averages():
    samples = [
        ("narrativeqa", 10.0, 1000), ("narrativeqa", 30.0, 9000),  # dataset mean 20
        ("qasper", 40.0, 5000),  # single-doc QA = mean(20, 40) = 30
        ("trec", 60.0, 3000),  # few-shot = 60
        ("lcc", 50.0, 500),  # code = 50, in both tables
        ("multifieldqa_zh", 80.0, 6000),  # ZH single-doc QA = 80
    ]  # fmt: skip
    out = m.summarize(samples, e=True)
    assert out["narrativeqa"] == 20.0
    assert out["category/single_doc_qa"] == 30.0
    assert out["category/code"] == 50.0
    assert out["avg_en"] == pytest.approx((30 + 60 + 50) / 3)
    assert out["avg_zh"] == pytest.approx((80 + 50) / 2)
    assert out["avg_en16"] == pytest.approx((20 + 40 + 60 + 50) / 4)
    assert out["average"] == pytest.approx((20 + 40 + 60 + 50 + 80) / 5)
    # buckets by record length: narrativeqa 0-4k = 10, 8k+ = 30; 0-4k mean over trec 60, lcc 50, narrativeqa 10
    assert out["e/0-4k/narrativeqa"] == 10.0
    assert out["e/8k+"] == 30.0
    assert out["e/0-4k"] == pytest.approx((10 + 60 + 50) / 3)
    assert "category/multi_doc_qa" not in out


def test_aggregate_excludes_skipped_and_counts(tiny_llama):
    _, tokenizer = tiny_llama
    task = LongBench(LongBenchConfig(datasets=["trec", "lcc"]), tokenizer)

    def scored(dataset, value, truncated):
        metrics = {"score": value, dataset: value, "truncated": truncated, "skipped": 0.0, "record_length": 100.0}
        return Score(score=value, metrics=metrics)

    skipped = Score(score=math.nan, metrics={"skipped": 1.0, "truncated": 0.0, "record_length": 9000.0})
    out = task.aggregate([scored("trec", 100.0, 1.0), scored("trec", 0.0, 0.0), skipped, scored("lcc", 40.0, 1.0)])
    assert out["trec"] == 50.0
    assert out["average"] == pytest.approx(45.0)  # mean of dataset means (50, 40), not of samples
    assert (out["truncated"], out["skipped"]) == (2.0, 1.0)
    assert "avg_zh" not in out
