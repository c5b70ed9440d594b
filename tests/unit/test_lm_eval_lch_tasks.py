"""lch's tasks exported as lm-eval YAML: the same prompts as lch's own runs, scored the same way."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lm_eval")

from harness.lm_eval import TASKS_DIR  # noqa: E402
from harness.lm_eval.adapter import LchLM  # noqa: E402
from methods.base import METHODS  # noqa: E402
from tasks.longbench.build import DATASETS, MAX_NEW_TOKENS  # noqa: E402


def load(names, metadata):
    from lm_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)
    return get_task_dict(names, manager)


def full(tiny_llama):
    return METHODS.get("full")(*tiny_llama, METHODS.get("full").Config())


def test_every_longbench_dataset_is_exported_with_its_official_generation_budget():
    import yaml

    for dataset in DATASETS:
        text = (TASKS_DIR / f"lch_longbench_{dataset}.yaml").read_text()
        config = yaml.safe_load(text)
        assert config["dataset_kwargs"] == {"dataset": dataset}
        assert config["generation_kwargs"]["max_gen_toks"] == MAX_NEW_TOKENS[dataset]
    group = yaml.safe_load((TASKS_DIR / "lch_longbench.yaml").read_text())
    assert group["task"] == [f"lch_longbench_{d}" for d in DATASETS]


def test_passkey_through_lm_eval_answers_as_lch_does(tiny_llama, tiny_dir):
    from lm_eval.evaluator import evaluate

    from tasks.passkey import Passkey

    tasks = load(["lch_passkey"], {"tokenizer": tiny_dir, "max_seq_lengths": [400], "samples": 3, "depths": [0, 1]})
    out = evaluate(LchLM.wrap(full(tiny_llama)), tasks, log_samples=True, bootstrap_iters=0)
    samples = out["samples"]["lch_passkey"]
    ours = Passkey(Passkey.Config(depths=[0, 1]), tiny_llama[1]).instances(400, 3, 0)
    assert [s["doc"]["target"] for s in samples] == [i.target for i in ours]
    assert [s["doc"]["depth"] for s in samples] == [0, 1, 0]
    method = full(tiny_llama)
    for sample, instance in zip(samples, ours, strict=True):
        assert tiny_llama[1].encode(sample["arguments"][0][0]) == instance.input_ids  # same prompt, same length
        method.reset()
        score = Passkey(Passkey.Config(), tiny_llama[1]).evaluate(method, instance)
        assert sample["filtered_resps"][0] == score.prediction
        assert sample["accuracy"] == score.score


@pytest.mark.data("babilong")
def test_babilong_through_lm_eval_asks_and_scores_as_lch_does(tiny_llama, tiny_dir, shared_data):
    from lm_eval.evaluator import evaluate

    from tasks.babilong.task import Babilong

    options = {"tasks": ["qa1", "qa5"], "data_dir": str(shared_data)}
    tasks = load(["lch_babilong"], {"tokenizer": tiny_dir, "max_seq_lengths": [0, 1200], "samples": 1, **options})
    out = evaluate(LchLM.wrap(full(tiny_llama)), tasks, log_samples=True, bootstrap_iters=0)
    samples = out["samples"]["lch_babilong"]
    task = Babilong(Babilong.Config(**options), tiny_llama[1])
    ours = [instance for length in (0, 1200) for instance in task.instances(length, 1, 0)]
    assert [s["doc"]["target"] for s in samples] == [i.target for i in ours]
    method = full(tiny_llama)
    for sample, instance in zip(samples, ours, strict=True):
        assert tiny_llama[1].encode(sample["arguments"][0][0]) == instance.input_ids
        method.reset()
        score = task.evaluate(method, instance)
        assert sample["filtered_resps"][0].strip() == score.prediction
        assert sample["accuracy"] == score.score


@pytest.mark.data("longbench")
def test_longbench_documents_are_lch_prompts_scored_with_the_official_metric(tiny_llama, tiny_dir):
    from tasks.longbench.metrics import score_prediction
    from tasks.longbench.task import LongBench

    tasks = load(["lch_longbench_hotpotqa"], {"tokenizer": tiny_dir, "max_seq_lengths": [600], "samples": 2})
    task = tasks["lch_longbench_hotpotqa"]
    ours = LongBench(LongBench.Config(datasets=["hotpotqa"]), tiny_llama[1]).instances(600, 2, 0)
    docs = list(task.eval_docs)
    assert [d["input"] for d in docs] == [tiny_llama[1].decode(i.input_ids) for i in ours]
    # The middle cut may split a UTF-8 character (byte tokenizer): decoding turns its bytes into U+FFFD.
    assert all(abs(len(tiny_llama[1].encode(d["input"])) - 600) <= 6 for d in docs)
    gold = docs[0]["answers"][0]
    assert task.process_results(docs[0], [gold]) == {"score": 100.0}
    wrong = "certainly not the answer"
    assert task.process_results(docs[0], [wrong])["score"] == 100 * score_prediction(
        "hotpotqa", wrong, docs[0]["answers"], None
    )


@pytest.mark.data("books")
def test_pg19_documents_are_the_lch_perplexity_books(tiny_llama, tiny_dir):
    from tasks.perplexity import Perplexity

    tasks = load(["lch_pg19"], {"tokenizer": tiny_dir, "max_seq_lengths": [500], "samples": 2})
    docs = list(tasks["lch_pg19"].eval_docs)
    ours = Perplexity(Perplexity.Config(), tiny_llama[1]).instances(500, 2, 0)
    assert [d["document"] for d in docs] == [i.metadata["document"] for i in ours]
    assert [tiny_llama[1].encode(d["text"]) for d in docs] == [i.input_ids for i in ours]
    method = full(tiny_llama)
    logprob = LchLM.wrap(method).loglikelihood_rolling([_rolling(docs[0]["text"])])[0]
    ids = [tiny_llama[1].bos_token_id, *ours[0].input_ids]
    method.reset()
    assert logprob == pytest.approx(float(method.score(torch.tensor(ids)).sum()), abs=1e-3)


def _rolling(text):
    from lm_eval.api.instance import Instance

    return Instance("loglikelihood_rolling", {}, (text,), 0, ("lch_pg19", 0, 1))
