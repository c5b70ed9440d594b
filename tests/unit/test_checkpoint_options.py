"""A checkpoint evaluates by itself: options come from its training.json; in a sweep a broken one is a failed cell."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from harness.cli import main

TINY_UIO = ["--segment", "16", "--memory-tokens", "4", "--lora-rank", "2", "--lora-alpha", "8"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    (root / "train").mkdir()
    (root / "train" / "1_story.txt").write_text("The quick brown fox jumps over the lazy dog. " * 20)
    status = main(["train", "uio", "--model", "tiny-random-llama", "--data", str(root / "train"), "--steps", "1",
                   "--seq-len", "64", *TINY_UIO, "--out", str(root / "ckpt"), "--quiet"])  # fmt: skip
    assert status == 0
    return root / "ckpt"


def stored_configs(path):
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT label, status, method_config FROM cells ORDER BY label").fetchall()
    return {label: (status, json.loads(config)) for label, status, config in rows}


def test_a_checkpoint_trained_with_other_options_evaluates_with_none_given(checkpoint, tmp_path):
    store = tmp_path / "s.sqlite"
    status = main(["eval", "--model", "tiny-random-llama", "--method", "uio", "--method-opt",
                   f"checkpoint={checkpoint}", "--task", "passkey", "--lengths", "300", "--samples", "1",
                   "--output", str(store), "--quiet"])  # fmt: skip
    assert status == 0
    ((state, config),) = stored_configs(store).values()
    assert state == "done"
    assert (config["segment"], config["memory_tokens"], config["lora_rank"], config["lora_alpha"]) == (16, 4, 2, 8)
    # Giving an option the checkpoint fixes, with the value it was trained with, is the same cell.
    again = main(["eval", "--model", "tiny-random-llama", "--method", "uio", "--method-opt", f"checkpoint={checkpoint}",
                  "--method-opt", "segment=16", "--task", "passkey", "--lengths", "300", "--samples", "1",
                  "--output", str(store), "--quiet"])  # fmt: skip
    assert again == 0 and len(stored_configs(store)) == 1


def test_in_a_sweep_a_broken_checkpoint_is_a_failed_cell_and_the_sweep_goes_on(checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "transfer_adapter.safetensors").write_bytes(b"\0" * 100)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        f"model: tiny-random-llama\noutput: {tmp_path}/s.sqlite\nsamples: 1\n"
        f"methods: [{{name: uio, label: broken, options: {{checkpoint: {broken}}}}}, {{name: full}}]\n"
        "tasks: [{name: passkey, lengths: [300]}]\n"
    )
    assert main(["run", str(sweep), "--quiet"]) == 0
    cells = stored_configs(tmp_path / "s.sqlite")
    assert cells["broken"][0] == "failed" and cells["full"][0] == "done"
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        (error,) = db.execute("SELECT error FROM cells WHERE label = 'broken'").fetchone()
    assert f"UIO checkpoint '{broken}' cannot be loaded" in error


def test_a_scalar_for_a_list_option_is_a_one_element_list(tmp_path):
    store = tmp_path / "d.sqlite"
    status = main(["eval", "--model", "tiny-random-llama", "--method", "full", "--task", "passkey", "--lengths", "300",
                   "--samples", "1", "--task-opt", "depths=0.5", "--output", str(store), "--quiet"])  # fmt: skip
    assert status == 0
    with sqlite3.connect(store) as db:
        (config,) = db.execute("SELECT task_config FROM cells").fetchone()
    assert json.loads(config)["depths"] == [0.5]


def test_mostly_text_with_some_garbage_trains_with_a_warning(tmp_path, capsys):
    data = tmp_path / "train"
    data.mkdir()
    (data / "1_story.txt").write_bytes(b"The quick brown fox jumps over the lazy dog. " * 40 + bytes(range(256)) * 2)
    status = main(["train", "uio", "--model", "tiny-random-llama", "--data", str(data), "--steps", "1",
                   "--seq-len", "64", *TINY_UIO, "--out", str(tmp_path / "c"), "--quiet"])  # fmt: skip
    assert status == 0
    assert "warning: 13.6% of the bytes of"  # (56 control + 2 DEL + 256 invalid) / 2312 in capsys.readouterr().err
