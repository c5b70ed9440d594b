"""BABILong: prompt strings, template and metric against booydar/babilong's; exact lengths, facts in order."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness.core.errors import UserError
from harness.models import byte_tokenizer
from tasks.babilong import build, metrics
from tasks.babilong.task import Babilong, BabilongConfig
from tasks.base import Score

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "babilong" / "official.json").read_text())
# Two stories of bAbI's test-file shape: numbers restart at 1, a question line carries its answer and support.
QA1 = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the garden.
5 Mary travelled to the office.
6 Where is Mary? \toffice\t5
1 Sandra journeyed to the kitchen.
2 Where is Sandra? \tkitchen\t1
"""


def _book() -> str:
    rng = random.Random(0)
    words = ["river", "lamp", "carriage", "doctor", "winter", "letter", "orchard", "bridge", "candle", "mill"]
    return " ".join(
        f"The {rng.choice(words)} of chapter {i} was {rng.choice(words)} and {rng.choice(words)} by the mill."
        for i in range(900)
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A data dir of BABILong's layout: qa1 with the two stories above, a 2-sample subset, one 'PG19 test' book."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "babilong" / build.FOLDER
    folder.mkdir(parents=True)
    (folder / build.FILES["qa1"]).write_text(QA1)
    (root / "babilong" / build.SUBSET).write_text(json.dumps({"qa1": [2, 0]}))
    (root / "books").mkdir()
    (root / "books" / "10146_synthetic.txt").write_text(_book())
    (root / "books" / "99_not_a_test_book.txt").write_text("Never used. " * 50)
    return root


def task(data: Path, **options) -> Babilong:
    return Babilong(BabilongConfig(data_dir=str(data), tasks=["qa1"], **options), byte_tokenizer())


def test_prompt_strings_equal_the_official_ones():
    assert GOLDEN["prompts"] == build.PROMPTS


@pytest.mark.parametrize("case", GOLDEN["rendered"], ids=lambda c: f"{c['task']}-{c['prompt']}")
def test_rendered_prompt_equals_official_get_formatted_input(case):
    rendered = build.render(case["task"], case["context"], case["question"], instructed=case["prompt"] == "full")
    assert rendered == case["text"]


@pytest.mark.parametrize("case", GOLDEN["compare"], ids=lambda c: f"{c['task']}-{c['output'][:20]}")
def test_metric_equals_official_compare_answers(case):
    assert metrics.correct(case["task"], case["target"], case["output"], case["question"]) == case["correct"]


def test_parse_babi_makes_one_sample_per_question_with_the_facts_before_it():
    samples = build.parse_babi(QA1)
    assert samples == [
        build.Sample(("Mary moved to the bathroom.", "John went to the hallway."), "Where is Mary? ", "bathroom"),
        build.Sample(
            (
                "Mary moved to the bathroom.",
                "John went to the hallway.",
                "Daniel went back to the garden.",
                "Mary travelled to the office.",
            ),
            "Where is Mary? ",
            "office",
        ),  # fmt: skip
        build.Sample(("Sandra journeyed to the kitchen.",), "Where is Sandra? ", "kitchen"),
    ]


@pytest.mark.parametrize("length", [1200, 2000])
def test_instances_are_exact_official_prompts_with_facts_in_order(data, length):
    babilong = task(data)
    tokenizer = babilong.tokenizer
    instances = babilong.instances(length, 2, seed=0)
    assert [i.target for i in instances] == ["kitchen", "bathroom"]  # the subset's order: samples 2, 0
    for instance, sample in zip(instances, [build.parse_babi(QA1)[i] for i in (2, 0)], strict=True):
        assert len(instance.input_ids) == length
        assert instance.metadata["book"] == "10146_synthetic.txt"  # only PG19 test books are background
        text = tokenizer.decode(instance.input_ids)
        head, _, rest = text.partition("<context>\n")
        context, _, _ = rest.partition("\n</context>")
        assert text == build.render("qa1", context, sample.question, instructed=True)
        at = 0
        for fact in sample.facts:
            at = context.index(fact, at) + len(fact)
        assert len(context) > 3 * sum(map(len, sample.facts))


def test_length_zero_is_the_facts_alone_and_samples_do_not_depend_on_n(data):
    babilong = task(data, prompt="plain")
    zero = babilong.instances(0, 1, seed=0)[0]
    assert babilong.tokenizer.decode(zero.input_ids) == (
        "<context>\nSandra journeyed to the kitchen.\n</context>\n\nQuestion: Where is Sandra?"
    )
    one, two = babilong.instances(400, 1, seed=3), babilong.instances(400, 2, seed=3)
    assert one[0].input_ids == two[0].input_ids
    assert babilong.instances(400, 1, seed=4)[0].input_ids != one[0].input_ids


def test_too_short_a_length_and_missing_data_are_one_line_errors(data, tmp_path):
    with pytest.raises(UserError, match="length 800 is shorter than the qa1 prompt without its context"):
        task(data).instances(800, 1, seed=0)  # the instructed frame alone is 865 bytes
    with pytest.raises(UserError, match="leaves no room for background around 1 facts"):
        task(data).instances(890, 1, seed=0)
    with pytest.raises(UserError, match="no bAbI_tasks_1-20_v1-2_en-10k under"):
        Babilong.check_config(BabilongConfig(data_dir=str(tmp_path)))


class Replies:
    """A model whose greedy answer is fixed text: what `evaluate` needs of a method."""

    def __init__(self, tokenizer, text: str):
        self.reply = tokenizer(text, add_special_tokens=False).input_ids

    def prefill(self, ids):
        pass

    def decode(self, n, stop_ids=()):
        return self.reply[:n]


def test_evaluate_scores_the_official_way_and_aggregate_averages_tasks(data):
    babilong = task(data, max_new_tokens=64)
    instance = babilong.instances(0, 1, seed=0)[0]  # "Where is Sandra?" -> kitchen
    right = babilong.evaluate(Replies(babilong.tokenizer, " The most recent location of Sandra is kitchen."), instance)
    wrong = babilong.evaluate(Replies(babilong.tokenizer, "kitchen or garden"), instance)
    assert (right.score, wrong.score) == (100.0, 0.0)
    scores = [
        Score(100.0, {"accuracy": 100.0, "qa1": 100.0}, details={"target": "kitchen"}),
        Score(0.0, {"accuracy": 0.0, "qa1": 0.0}, details={"target": "kitchen"}),
        Score(0.0, {"accuracy": 0.0, "qa1": 0.0}, details={"target": "office"}),
        Score(100.0, {"accuracy": 100.0, "qa5": 100.0}, details={"target": "Fred"}),
    ]
    out = babilong.aggregate(scores)
    assert out["qa1"] == pytest.approx(100 / 3) and out["qa5"] == 100.0
    assert out["accuracy"] == pytest.approx((100 / 3 + 100) / 2)  # BABILong's avg: the mean of the task means
    assert out["chance_qa1"] == pytest.approx(200 / 3) and out["chance"] == pytest.approx((200 / 3 + 100) / 2)


@pytest.mark.data("babilong")
def test_shared_babi_test_files_give_bAbI_counts_and_the_published_subset(shared_data):
    folder = build.babi_folder(str(shared_data))
    for name in build.TASKS:
        every, subset = build.samples(name, folder, "all"), build.samples(name, folder, "test_100")
        assert len(every) == 1000 and len(subset) == 100
        indices = json.loads((folder / build.SUBSET).read_text())[name]
        assert subset[0] == every[indices[0]]
        assert {sample.answer.lower() for sample in every} <= {label.lower() for label in metrics.LABELS[name]}


def test_lch_eval_runs_length_zero_and_fails_too_short_a_length_with_its_reason(data, tmp_path):
    import sqlite3

    from harness.cli import main

    store = tmp_path / "b.sqlite"
    base = ["eval", "--model", "tiny-random-llama", "--method", "full", "--task", "babilong", "--task-opt",
            f"data_dir={data}", "--task-opt", "tasks=qa1", "--task-opt", "max_new_tokens=2", "--samples", "2",
            "--output", str(store), "--quiet"]  # fmt: skip
    assert main([*base, "--lengths", "0,1000"]) == 0
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT length, status, samples FROM cells ORDER BY length").fetchall()
    assert rows == [(0, "done", 2), (1000, "done", 2)]
    main([*base, "--lengths", "64"])
    with sqlite3.connect(store) as db:
        status, error = db.execute("SELECT status, error FROM cells WHERE length = 64").fetchone()
    assert status == "failed" and "babilong: length 64 is shorter than the qa1 prompt without its context" in error


def test_query_after_splits_each_prompt_where_its_question_begins(data):
    inside = task(data).instances(1200, 3, seed=0)
    after = task(data, query_position="after").instances(1200, 3, seed=0)
    assert [i.input_ids for i in after] == [i.input_ids for i in inside] and all(i.context_tokens == 0 for i in inside)
    tokenizer = byte_tokenizer()
    for instance in after:
        context = tokenizer.decode(instance.input_ids[: instance.context_tokens])
        question = tokenizer.decode(instance.input_ids[instance.context_tokens :])
        asked = instance.metadata["question"].strip()
        assert question.endswith(asked) and asked not in context and question.startswith("\n</context>")
    assert Babilong.report_name({"query_position": "after"}) == "babilong:after"
    assert Babilong.report_name({"tasks": ["qa1"], "query_position": "after"}) == "babilong:qa1,after"
