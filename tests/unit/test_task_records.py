"""Task-shaped training data: prompt/answer records used whole, varying document lengths, their runs and resumes."""

from __future__ import annotations

import json

import pytest
import torch

from harness.cli import main
from harness.core.errors import UserError
from harness.models import byte_tokenizer
from harness.training import TrainSpec, train
from harness.training_data import Documents, Record, RecordDocuments, Text, VaryingDocuments, load_records, tokenize

TEXTS = [Text("a", "It was a bright cold day in April. " * 30), Text("b", "short text"), Text("c", "x")]


def test_a_text_shorter_than_the_length_is_one_whole_document_and_longer_ones_give_windows():
    tokenizer = byte_tokenizer()
    documents = Documents(TEXTS, tokenizer, 100, seed=0)
    lengths = sorted(documents[i].ids.numel() for i in range(len(documents.windows)))
    long = len(TEXTS[0].text)
    assert lengths == [len("short text")] + [100] * (long // 100)  # "x" has nothing to predict: left out
    assert all(documents[i].answer is None for i in range(5))


def test_varying_lengths_are_drawn_from_the_set_reproducibly():
    tokenizer = byte_tokenizer()
    tokens = tokenize(TEXTS[:1], tokenizer)
    one = VaryingDocuments(TEXTS[:1], tokenizer, [32, 64, 128], seed=4, tokens=tokens)
    two = VaryingDocuments(TEXTS[:1], tokenizer, [32, 64, 128], seed=4, tokens=tokens)
    drawn = [one[i].ids for i in range(60)]
    assert {ids.numel() for ids in drawn} == {32, 64, 128}
    assert all(torch.equal(a, two[i].ids) for i, a in enumerate(drawn))  # a pure function of the index
    assert all(torch.equal(one[i].ids, two[i].ids) for i in reversed(range(60)))  # in any order: resume needs i only
    other = VaryingDocuments(TEXTS[:1], tokenizer, [32, 64, 128], seed=5, tokens=tokens)
    assert [ids.numel() for ids in drawn] != [other[i].ids.numel() for i in range(60)]


def test_a_record_is_prompt_answer_eos_whole_and_a_longer_one_is_left_out():
    tokenizer = byte_tokenizer()
    records = [Record("r0", "Where is Mary?", " kitchen"), Record("r1", "x" * 100, " no")]
    documents = RecordDocuments(records, tokenizer, max_len=40, seed=0)
    assert documents.left_out == 1 and len(documents.examples) == 1
    example = documents[0]
    prompt = tokenizer("Where is Mary?", add_special_tokens=False)["input_ids"]
    answer = tokenizer(" kitchen", add_special_tokens=False)["input_ids"]
    assert example.ids.tolist() == prompt + answer + [tokenizer.eos_token_id]
    assert example.answer == len(prompt)
    with pytest.raises(UserError, match="no record fits in 10 tokens"):
        RecordDocuments(records, tokenizer, max_len=10, seed=0)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_records_name_their_missing_field_and_books_are_not_records(tmp_path):
    data = _jsonl(tmp_path / "r.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(UserError, match="--prompt-field 'prompt' is not a field of .*question, answer"):
        load_records(str(data), "prompt", "answer")
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "1342_b.txt").write_text("a book")
    with pytest.raises(UserError, match="holds .txt books"):
        load_records(str(tmp_path / "books"), "prompt", "answer")


def _passkeys(path, n=12):
    rows = []
    for i in range(n):
        key = 10000 + 7919 * i % 90000
        filler = "The grass is green. " * (1 + i % 3)
        rows.append({"prompt": f"{filler}The pass key is {key}. {filler}What is the pass key? The pass key is",
                     "answer": f" {key}"})  # fmt: skip
    return _jsonl(path, rows)


def test_answer_loss_trains_from_records_and_training_json_records_the_objective(tmp_path):
    data = _passkeys(tmp_path / "keys.jsonl")
    argv = ["train", "rmt", "--model", "tiny-random-llama", "--data", str(data), "--prompt-field", "prompt",
            "--answer-field", "answer", "--loss", "answer", "--steps", "3", "--seq-len", "200", "--segment", "32",
            "--memory-tokens", "2", "--lora-rank", "2", "--lora-alpha", "8", "--out", str(tmp_path / "o"),
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    written = json.loads((tmp_path / "o" / "training.json").read_text())
    assert (written["loss"], written["objective"], written["prompt_field"]) == ("answer", "lm", "prompt")
    log = [json.loads(line) for line in (tmp_path / "o" / "train_log.jsonl").read_text().splitlines()]
    lengths = {len(row["prompt"]) + len(row["answer"]) + 1 for row in map(json.loads, data.read_text().splitlines())}
    assert all(row["tokens"] in lengths for row in log)  # each record whole, at its own length (bytes + EOS)
    assert written["seen"]["tokens"] == sum(row["tokens"] for row in log)
    answers = {len(row["answer"]) + 1 for row in map(json.loads, data.read_text().splitlines())}
    assert all(row["counted"] in answers for row in log)  # the predictions the loss counted: answer and EOS


def test_distillation_logs_the_teachers_time_and_resumes_exactly(tmp_path, tiny_llama):
    data = tmp_path / "books"
    data.mkdir()
    (data / "1342_a.txt").write_text("It was a bright cold day in April, and the clocks were striking thirteen. " * 40)
    fields = {"method": "uio", "model": "tiny-random-llama", "data": str(data), "objective": "distill",
              "stages": [{"seq_len": 64, "steps": 4, "lengths": [32, 48, 64]}], "checkpoint_every": 2, "lr": 1e-2,
              "method_options": {"segment": 16, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 8}}  # fmt: skip
    whole = train(TrainSpec(**fields, out=str(tmp_path / "whole")), progress=False, loaded=tiny_llama)
    assert all(row["teacher_seconds"] > 0 for row in whole)
    assert len({row["tokens"] for row in whole}) > 1  # lengths drawn from the set

    def stop_after_three(row):
        if row["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            TrainSpec(**fields, out=str(tmp_path / "cut")), progress=False, loaded=tiny_llama, on_step=stop_after_three
        )
    resumed = train(TrainSpec(**fields, out=str(tmp_path / "cut")), resume=True, progress=False, loaded=tiny_llama)
    assert [row["loss"] for row in resumed] == [row["loss"] for row in whole]
