"""LongBench v1 prompts (byte-exact against the official JSON), truncation, chat-template rule, data finding.

`tests/golden/longbench/dataset2prompt.json` and `dataset2maxlen.json` are byte copies of
THUDM/LongBench @ 2e00731f8d0b `LongBench/config/`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.core.errors import UserError
from harness.core.validation import validate
from harness.models import byte_tokenizer
from tasks.longbench import build
from tasks.longbench.task import LongBench, LongBenchConfig

GOLDEN = Path(__file__).parents[1] / "golden" / "longbench"
OFFICIAL_PROMPTS = json.loads((GOLDEN / "dataset2prompt.json").read_text(encoding="utf-8"))
OFFICIAL_MAXLEN = json.loads((GOLDEN / "dataset2maxlen.json").read_text(encoding="utf-8"))
CHAT = "{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"


def record(dataset: str, context: str = "", question: str = "Q?", answers=("x",)) -> dict:
    context = context or f"Context of {dataset} with {{braces}} and 中文."
    classes = ["City", "Country"] if dataset in ("trec", "lsht") else None
    return {"input": question, "context": context, "answers": list(answers), "length": 4500, "dataset": dataset,
            "language": "zh" if dataset in ("multifieldqa_zh", "dureader", "vcsum", "lsht") else "en",
            "all_classes": classes, "_id": f"id-{dataset}"}  # fmt: skip


def write(directory: Path, dataset: str, records: list[dict]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    (directory / f"{dataset}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_task(tmp_path: Path, tokenizer=None, **options) -> LongBench:
    return LongBench(LongBenchConfig(data_dir=str(tmp_path), **options), tokenizer or byte_tokenizer())


class FakeModel:
    """Records what it is fed; replies with fixed token ids."""

    def __init__(self, reply: list[int] | None = None, max_context: int | None = None):
        self.reply, self.max_context = reply or [], max_context
        self.prefilled: list[int] | None = None
        self.stop_ids: list[int] | None = None

    def prefill(self, input_ids):
        self.prefilled = input_ids.tolist()

    def decode(self, max_new_tokens, stop_ids):
        self.stop_ids = stop_ids
        return self.reply[:max_new_tokens]


class NoRun:
    max_context = None

    def prefill(self, input_ids):
        raise AssertionError("a skipped sample must not be run")

    decode = prefill


def test_templates_and_budgets_are_the_official_ones():
    assert list(OFFICIAL_PROMPTS) == list(build.DATASETS)
    for name in build.DATASETS:
        assert build.PROMPTS[name] == OFFICIAL_PROMPTS[name], name
    assert build.MAX_NEW_TOKENS == OFFICIAL_MAXLEN
    assert "asconcisely" in build.PROMPTS["narrativeqa"]  # the official typo is kept


def test_trec_prompt_literal():
    text = build.render_prompt(
        "trec", {"context": "Question: Who?\nType: Individual", "input": "Question: Why?\nType:"}
    )
    assert text == (
        "Please determine the type of the question below. Here are some examples of questions.\n\n"
        "Question: Who?\nType: Individual\nQuestion: Why?\nType:"
    )


@pytest.mark.parametrize("dataset", build.DATASETS)
def test_instance_is_the_official_prompt_byte_exact(tmp_path, dataset):
    rec = record(dataset)
    write(tmp_path / "longbench", dataset, [rec])
    tokenizer = byte_tokenizer()
    (instance,) = make_task(tmp_path, tokenizer, datasets=[dataset]).instances(100_000, 1, 0)
    assert tokenizer.decode(instance.input_ids) == OFFICIAL_PROMPTS[dataset].format(**rec)
    assert instance.max_new_tokens == OFFICIAL_MAXLEN[dataset]
    assert instance.metadata["length"] == 4500 and instance.metadata["dataset"] == dataset


def test_middle_left_and_none_truncation(tmp_path):
    rec = record("gov_report", context="".join(chr(ord("a") + i % 26) for i in range(3000)))
    write(tmp_path, "gov_report", [rec])  # directly in data_dir, no longbench/ folder
    tokenizer = byte_tokenizer()
    full = tokenizer(build.render_prompt("gov_report", rec), add_special_tokens=False).input_ids
    middle = make_task(tmp_path, tokenizer, datasets="gov_report").instances(101, 1, 0)[0]
    assert middle.input_ids == full[:50] + full[-50:]  # int(101 / 2) = 50 tokens from each end
    left = make_task(tmp_path, tokenizer, datasets="gov_report", truncation="left").instances(101, 1, 0)[0]
    assert left.input_ids == full[-101:]
    none = make_task(tmp_path, tokenizer, datasets="gov_report", truncation="none").instances(101, 1, 0)[0]
    assert none.input_ids == full
    assert build.truncate([1, 2, 3], 1, "middle") == []  # half = 0 keeps nothing, not everything

    model = FakeModel(reply=[tokenizer.eos_token_id])
    score = make_task(tmp_path, tokenizer, datasets="gov_report").evaluate(model, middle)
    assert model.prefilled == middle.input_ids
    assert score.details == {"budget": 101, "prompt_tokens": len(full), "truncated": True, "skipped": False,
                             "input_tokens": 100}  # fmt: skip
    assert score.metrics["truncated"] == 1.0


def test_max_context_lowers_the_budget(tmp_path):
    rec = record("trec", context="".join(chr(ord("a") + i % 26) for i in range(3000)))
    write(tmp_path, "trec", [rec])
    tokenizer = byte_tokenizer()
    full = tokenizer(build.render_prompt("trec", rec), add_special_tokens=False).input_ids
    task = make_task(tmp_path, tokenizer, datasets=["trec"])
    (instance,) = task.instances(1000, 1, 0)
    model = FakeModel(max_context=200)
    score = task.evaluate(model, instance)
    # 200 - 64 new tokens (trec) = 136 prompt tokens: 68 from each end of the original prompt
    assert model.prefilled == full[:68] + full[-68:]
    assert score.details["budget"] == 136 and score.details["truncated"] is True


def test_skip_marks_over_budget_samples_skipped(tmp_path):
    long, short = record("qasper", context="x" * 3000), record("qasper", context="short")
    write(tmp_path, "qasper", [long, short])
    tokenizer = byte_tokenizer()
    task = make_task(tmp_path, tokenizer, datasets=["qasper"], truncation="skip")
    first, second = task.instances(1000, 2, 0)
    assert len(first.input_ids) <= 1000  # never trips the runner's max_context check
    skipped = task.evaluate(NoRun(), first)
    assert skipped.metrics["skipped"] == 1.0 and math.isnan(skipped.score)
    kept = task.evaluate(FakeModel(reply=list(tokenizer("x", add_special_tokens=False).input_ids)), second)
    assert kept.metrics["skipped"] == 0.0 and kept.metrics["truncated"] == 0.0
    assert kept.metrics["qasper"] == 100.0  # prediction "x" equals the gold answer "x"
    out = task.aggregate([skipped, kept])
    assert (out["skipped"], out["truncated"], out["qasper"]) == (1.0, 0.0, 100.0)


def test_samsum_stops_and_cuts_at_a_newline(tmp_path):
    write(tmp_path, "samsum", [record("samsum", answers=["Hi there"])])
    tokenizer = byte_tokenizer()
    task = make_task(tmp_path, tokenizer, datasets=["samsum"])
    (instance,) = task.instances(10_000, 1, 0)
    newline = tokenizer("\n", add_special_tokens=False).input_ids
    model = FakeModel(reply=tokenizer("Hi there\nmore", add_special_tokens=False).input_ids)
    score = task.evaluate(model, instance)
    assert newline[0] in model.stop_ids and tokenizer.eos_token_id in model.stop_ids
    assert score.prediction == "Hi there"


def test_chat_template_rule(tmp_path):
    for name in ("narrativeqa", "trec"):
        write(tmp_path, name, [record(name)])
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = CHAT

    def decoded(policy, dataset):
        task = make_task(tmp_path, tokenizer, datasets=[dataset], chat_template=policy)
        return tokenizer.decode(task.instances(100_000, 1, 0)[0].input_ids)

    narrative = OFFICIAL_PROMPTS["narrativeqa"].format(**record("narrativeqa"))
    trec = OFFICIAL_PROMPTS["trec"].format(**record("trec"))
    assert decoded("auto", "narrativeqa") == f"<u>{narrative}</u><a>"
    assert decoded("auto", "trec") == trec  # official: no chat template on few-shot and code datasets
    assert decoded("on", "trec") == f"<u>{trec}</u><a>"
    assert decoded("off", "narrativeqa") == narrative
    with pytest.raises(UserError, match="no chat template"):
        make_task(tmp_path, byte_tokenizer(), datasets=["trec"], chat_template="on").instances(100, 1, 0)


def test_instances_interleave_datasets_and_do_not_depend_on_n(tmp_path):
    write(tmp_path, "trec", [record("trec", question=f"t{i}") for i in range(3)])
    write(tmp_path, "lcc", [record("lcc", question=f"l{i}") for i in range(1)])
    task = make_task(tmp_path, datasets=["trec", "lcc"])
    two = [i.id for i in task.instances(10_000, 2, 0)]
    assert two == ["longbench-trec-0", "longbench-lcc-0", "longbench-trec-1"]  # lcc has a single record
    assert [i.id for i in task.instances(10_000, 3, 0)][:3] == two


def test_data_dir_errors_and_environment(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="not a directory"):
        build.load_records("trec", 1, str(tmp_path / "absent"))
    with pytest.raises(UserError, match="no trec.jsonl"):
        build.load_records("trec", 1, str(tmp_path))
    write(tmp_path / "longbench", "trec", [record("trec")])
    monkeypatch.setenv("LCH_DATA_DIR", str(tmp_path))
    assert build.load_records("trec", 5)[0]["_id"] == "id-trec"


def test_dataset_names_are_validated_in_one_line():
    with pytest.raises(UserError) as error:
        validate(LongBenchConfig, {"datasets": ["trec", "tre"]}, "task 'longbench'")
    assert "unknown LongBench dataset 'tre'" in str(error.value) and "repobench-p" in str(error.value)
    assert "\n" not in str(error.value)
    assert LongBenchConfig(datasets="trec").datasets == ["trec"]
    assert LongBenchConfig().datasets == list(build.DATASETS)


def test_after_marks_the_context_and_cuts_it_alone(tmp_path):
    """`query_position: after`: the same prompt, its context marked; truncation keeps the question whole."""
    rec = record("qasper", context="".join(chr(ord("a") + i % 26) for i in range(3000)), question="Why so?")
    write(tmp_path, "qasper", [rec])
    tokenizer = byte_tokenizer()
    head, tail = (tokenizer(part, add_special_tokens=False).input_ids for part in build.split_prompt("qasper", rec))
    assert tokenizer.decode(head + tail) == build.render_prompt("qasper", rec)
    assert tokenizer.decode(tail).endswith("Question: Why so?\n\nAnswer:")
    assert rec["context"] not in tokenizer.decode(tail)
    task = make_task(tmp_path, tokenizer, datasets="qasper", query_position="after", chat_template="off")
    whole = task.instances(10_000, 1, 0)[0]
    prefix = len(task.frame("qasper")[0])
    assert whole.input_ids[prefix:] == head + tail and whole.context_tokens == prefix + len(head)
    cut = task.instances(1001, 1, 0)[0]
    half = (1001 - len(tail)) // 2
    assert cut.input_ids[prefix:] == head[:half] + head[-half:] + tail  # officially the whole prompt is cut
    assert cut.context_tokens == prefix + 2 * half
    model = FakeModel(reply=[tokenizer.eos_token_id])
    task.evaluate(model, cut)
    assert model.prefilled == cut.input_ids
    with pytest.raises(UserError, match="query_position after needs the cell length"):
        task.evaluate(FakeModel(max_context=900), cut)
    inside = make_task(tmp_path, tokenizer, datasets="qasper", chat_template="off").instances(10_000, 1, 0)[0]
    assert inside.input_ids == whole.input_ids and inside.context_tokens == 0
