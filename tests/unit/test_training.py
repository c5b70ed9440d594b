"""The shared training loop: exact resume (in-process stop and a real kill -9), checkpoints that evaluate, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from harness.cli import main
from harness.training import TrainSpec, schedule, train
from methods.base import METHODS

BOOK = "It was a bright cold day in April, and the clocks were striking thirteen. " * 120


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "1342_a_book.txt").write_text(BOOK)
    (folder / "10146_a_pg19_test_book.txt").write_text("TEST BOOK " * 2000)
    return folder


def spec(data, out, **overrides):
    fields = {
        "method": "uio", "model": "tiny-random-llama", "data": str(data), "steps": 6, "seq_len": 64,
        "checkpoint_every": 2, "out": str(out), "lr": 1e-2,
        "method_options": {"segment": 16, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 8},
        "train_options": {"strategy": "unbiased", "window": 1},
    }  # fmt: skip
    return TrainSpec(**(fields | overrides))


class Stop(Exception):
    pass


def test_stopped_and_resumed_run_has_the_uninterrupted_losses(data, tmp_path):
    whole = train(spec(data, tmp_path / "whole"), progress=False)

    def stop_after_three(row):
        if row["step"] == 3:  # one step past the step-2 checkpoint: that step is lost and redone
            raise Stop

    with pytest.raises(Stop):
        train(spec(data, tmp_path / "cut"), progress=False, on_step=stop_after_three)
    resumed = train(spec(data, tmp_path / "cut"), resume=True, progress=False)
    assert [row["loss"] for row in resumed] == [row["loss"] for row in whole]
    assert len({row["loss"] for row in whole}) == len(whole)  # the losses move: the comparison means something
    log = [json.loads(line) for line in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 7))


@pytest.mark.parametrize(
    "plan", [["--steps", "40", "--seq-len", "512"], ["--stages", "256:20,512:20"], ["--stages", "128/256/512:40"]]
)
def test_kill_9_then_resume_reproduces_the_losses(plan, data, tmp_path):
    args = [
        sys.executable, "-m", "harness.cli", "train", "uio", "--model", "tiny-random-llama", "--data", str(data),
        *plan, "--segment", "32", "--memory-tokens", "4", "--lora-rank", "2",
        "--lora-alpha", "8", "--window", "2", "--lr", "1e-2", "--checkpoint-every", "2", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    whole = tmp_path / "whole"
    subprocess.run([*args, "--out", str(whole)], check=True, env=env, capture_output=True)
    cut = tmp_path / "cut"
    process = subprocess.Popen([*args, "--out", str(cut)], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (cut / "train_log.jsonl").is_file() and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    steps = len((cut / "train_log.jsonl").read_text().splitlines())
    assert 2 <= steps < 40, "the kill must land mid-run"
    subprocess.run([*args, "--out", str(cut), "--resume"], check=True, env=env, capture_output=True)
    losses = [json.loads(line)["loss"] for line in (whole / "train_log.jsonl").read_text().splitlines()]
    again = [json.loads(line)["loss"] for line in (cut / "train_log.jsonl").read_text().splitlines()]
    assert again == losses and len(losses) == 40


def test_checkpoint_evaluates_and_differs_from_untrained(data, tmp_path, tiny_llama):
    train(spec(data, tmp_path / "ckpt"), progress=False, loaded=tiny_llama)
    options = {"segment": 16, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 8}
    cls = METHODS.get("uio")
    trained = cls(*tiny_llama, cls.Config(**options, checkpoint=str(tmp_path / "ckpt")))
    untrained = cls(*tiny_llama, cls.Config(**options))
    ids = torch.randint(0, 256, (64,), generator=torch.Generator().manual_seed(0))
    assert (trained.score(ids) - untrained.score(ids)).abs().max() > 1e-4


def test_checkpoint_flag_warm_starts_the_method_and_is_not_checkpoint_every(data, tmp_path, tiny_llama):
    """`--checkpoint DIR` is the method's option (argparse abbreviations are off): training goes on from DIR."""
    from harness.cli import main

    train(spec(data, tmp_path / "first"), progress=False, loaded=tiny_llama)
    argv = ["train", "uio", "--model", "tiny-random-llama", "--data", str(data), "--steps", "1", "--seq-len", "64",
            "--segment", "16", "--memory-tokens", "4", "--lora-rank", "2", "--lora-alpha", "8", "--lr", "1e-2",
            "--quiet", "--checkpoint-every", "1"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "warm"), "--checkpoint", str(tmp_path / "first")]) == 0
    assert main([*argv, "--out", str(tmp_path / "cold")]) == 0
    written = json.loads((tmp_path / "warm" / "training.json").read_text())
    assert written["method_options"]["checkpoint"] == str(tmp_path / "first") and written["checkpoint_every"] == 1
    warm, cold = (json.loads((tmp_path / run / "train_log.jsonl").read_text())["loss"] for run in ("warm", "cold"))
    assert warm < cold  # the same first document, read by the trained adapters


def test_test_books_are_skipped_and_alone_refused(data, tmp_path, capsys):
    from harness.training_data import load_texts

    assert [text.name for text in load_texts(str(data))] == [str(data / "1342_a_book.txt")]
    assert len(load_texts(str(data), allow_test_data=True)) == 2
    only_test = data / "10146_a_pg19_test_book.txt"
    argv = ["train", "uio", "--model", "tiny-random-llama", "--data", str(only_test), "--steps", "1",
            "--seq-len", "64", "--segment", "16", "--memory-tokens", "4", "--out", str(tmp_path / "o")]  # fmt: skip
    code = main(argv)
    assert code == 2 and "--allow-test-data" in capsys.readouterr().err


def test_schedule_warms_up_then_decays_to_zero():
    factor = schedule(200, 0.01)
    assert [factor(0), factor(1)] == [0.5, 1.0]
    assert factor(100) == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi * 98 / 198)).item()))
    assert factor(199) == pytest.approx(0.0, abs=1e-3)


def test_linear_schedule_decays_to_zero_after_warm_up():  # RMT's official scripts (transformers' linear schedule)
    factor = schedule(100, 0.1, "linear")
    assert [factor(0), factor(9), factor(10), factor(55), factor(99)] == pytest.approx([0.1, 1.0, 1.0, 0.5, 1 / 90])


def test_constant_schedule_holds_the_peak_after_warm_up():  # LongLoRA's constant_with_warmup, 20 of 1,000 steps
    factor = schedule(1000, 0.02, "constant")
    assert [factor(0), factor(19), factor(20), factor(999)] == [1 / 20, 1.0, 1.0, 1.0]


BAD = [
    (["--strategy", "sometimes"], "strategy"),
    (["--window", "0"], "window"),
    (["--seq-len", "70"], "multiple of segment"),
    (["--seq-len", "16"], "--seq-len 16: documents of 16 tokens must be a multiple of segment 16, at least 2"),
    (["--segmentt", "16"], "unknown option '--segmentt'"),
    (["--strategy"], "must be followed by a value"),
]


@pytest.mark.parametrize(("flags", "message"), BAD)
def test_bad_train_input_is_one_line_and_exit_2(flags, message, data, tmp_path, capsys):
    base = {"--model": "tiny-random-llama", "--data": str(data), "--steps": "1", "--seq-len": "64",
            "--segment": "16", "--memory-tokens": "4", "--out": str(tmp_path / "o")}  # fmt: skip
    for flag in flags[::2]:
        base.pop(flag, None)
    argv = ["train", "uio", *[x for pair in base.items() for x in pair], *flags]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_out_folder_checks(data, tmp_path, capsys):
    argv = ["train", "uio", "--model", "tiny-random-llama", "--data", str(data), "--steps", "1", "--seq-len", "64",
            "--segment", "16", "--memory-tokens", "4", "--quiet"]  # fmt: skip
    other = tmp_path / "other"
    other.mkdir()
    (other / "training.json").write_text(json.dumps({"method": "rmt"}))
    assert main([*argv, "--out", str(other)]) == 2
    assert "holds a 'rmt' checkpoint" in capsys.readouterr().err
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    assert main([*argv, "--out", str(stranger)]) == 2
    assert "holds no lch training checkpoint" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "ok")]) == 0
    assert main([*argv, "--out", str(tmp_path / "ok")]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "ok"), "--resume", "--lr", "0.5"]) == 2
    assert "lr differ" in capsys.readouterr().err
    assert main(["train", "full", *argv[2:], "--out", str(tmp_path / "f")]) == 2
    assert "not trainable. Trainable: longlora, rmt, uio" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*argv[:5], str(empty), *argv[6:], "--out", str(tmp_path / "e")]) == 2
    assert "no .txt files" in capsys.readouterr().err


def test_lch_gradients_prints_the_fidelity_table(data, capsys):
    code = main(["gradients", "--model", "tiny-random-llama", "--data", str(data), "--documents", "1",
                 "--seq-len", "64", "--segment", "16", "--memory-tokens", "4", "--lora-rank", "2",
                 "--strategies", "incremental,unbiased", "--window", "1,4", "--seeds", "2", "--csv"])  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("strategy,window,cosine_mean")
    rows = {tuple(line.split(",")[:2]): line.split(",") for line in lines[1:]}
    assert set(rows) == {("incremental", "1"), ("incremental", "4"), ("unbiased", "1"), ("unbiased", "4")}
    assert float(rows["incremental", "4"][2]) == pytest.approx(1.0, abs=1e-5)  # S >= T - 1: exact
    assert main(["gradients", "--model", "tiny-random-llama", "--data", str(data), "--seq-len", "64",
                 "--segment", "16", "--memory-tokens", "4", "--strategies", "often"]) == 2  # fmt: skip
    assert "unknown strategy 'often'" in capsys.readouterr().err


def staged(data, out, **overrides):
    fields = {"steps": None, "seq_len": None, "stages": [{"seq_len": 32, "steps": 3}, {"seq_len": 64, "steps": 3}]}
    return spec(data, out, **(fields | overrides))


def test_stages_share_one_schedule_log_their_length_and_resume_mid_stage(data, tmp_path):
    whole = train(staged(data, tmp_path / "whole"), progress=False)
    assert [(row["stage"], row["seq_len"]) for row in whole] == [(0, 32)] * 3 + [(1, 64)] * 3
    factor = schedule(6, 0.01)  # one warm-up + cosine over all six steps, not one per stage
    assert [row["lr"] for row in whole] == pytest.approx([1e-2 * factor(step) for step in range(6)])

    def stop_after_five(row):
        if row["step"] == 5:  # mid second stage, one step past the step-4 checkpoint
            raise Stop

    with pytest.raises(Stop):
        train(staged(data, tmp_path / "cut"), progress=False, on_step=stop_after_five)
    resumed = train(staged(data, tmp_path / "cut"), resume=True, progress=False)
    assert [row["loss"] for row in resumed] == [row["loss"] for row in whole]
    written = json.loads((tmp_path / "cut" / "training.json").read_text())
    assert written["trained"] == {"longest_document": 64, "most_memories": 64 // 16 - 1}
    assert written["seen"] == {"steps": 6, "documents": 6, "tokens": 3 * 32 + 3 * 64}  # resumed: counted once


def test_keep_at_keeps_the_checkpoints_of_those_steps(data, tmp_path, tiny_llama):
    """The checkpoint at a stage's end (step 3 here, checkpoints every 10) is kept beside OUT as it was then."""
    out = tmp_path / "staged"
    train(staged(data, out, keep_at=[3, 6], checkpoint_every=10), progress=False, loaded=tiny_llama)
    kept = tmp_path / "staged@3"
    assert sorted(path.name for path in tmp_path.glob("staged@*")) == ["staged@3", "staged@6"]
    assert not (kept / "trainer_state.pt").exists()
    assert json.loads((kept / "training.json").read_text())["seen"]["steps"] == 3

    def stop_after_three(row):
        if row["step"] == 3:
            raise Stop

    with pytest.raises(Stop):  # the same run, stopped at step 3 with a checkpoint there, resumable with other keeps
        train(
            staged(data, tmp_path / "ref", checkpoint_every=3),
            progress=False,
            loaded=tiny_llama,
            on_step=stop_after_three,
        )
    for name in ("memory_embedding.safetensors", "encoder_adapter.safetensors", "transfer_adapter.safetensors"):
        assert (kept / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
        assert (kept / name).read_bytes() != (out / name).read_bytes()
    train(staged(data, tmp_path / "ref", keep_at=[5]), resume=True, progress=False, loaded=tiny_llama)
    assert (tmp_path / "ref@5").is_dir() and not (tmp_path / "ref@3").exists()


def test_the_budget_counts_every_document_of_every_step(data, tmp_path):
    from harness.checkpoints import training_budget

    stages = [{"seq_len": 32, "steps": 2}, {"seq_len": 64, "steps": 3}]
    train(staged(data, tmp_path / "a", stages=stages, accumulation=2), progress=False)
    budget = training_budget(str(tmp_path / "a"))
    assert (budget["steps"], budget["tokens"], budget["longest_document"]) == (5, 2 * (2 * 32 + 3 * 64), 64)
    assert json.loads((tmp_path / "a" / "training.json").read_text())["seen"]["documents"] == 10


def test_a_checkpoint_knows_the_memories_it_trained_with(data, tmp_path, tiny_llama):
    train(staged(data, tmp_path / "ckpt", stages=[{"seq_len": 64, "steps": 1}]), progress=False, loaded=tiny_llama)
    cls = METHODS.get("uio")
    method = cls(*tiny_llama, cls.Config(checkpoint=str(tmp_path / "ckpt"), segment=16, memory_tokens=4,
                                         lora_rank=2, lora_alpha=8))  # fmt: skip
    assert method.trained_memories == 3
    assert not method.beyond_trained_memory(64)  # 4 segments: the last reads 3 memories, as in training
    assert method.beyond_trained_memory(65)  # the 65th token's segment reads 4


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--stages", "32:3,64"], "--stages must look like LEN:STEPS"),
        (["--stages", "32:0"], "--stages lengths and steps must be positive"),
        (["--stages", "32:3", "--steps", "3"], "--stages replaces --steps and --seq-len"),
        (["--seq-len", "64"], "lch train needs --steps and --seq-len, or --stages"),
        (["--stages", "64:1,70:1"], "--stages 70:1: documents of 70 tokens must be a multiple of segment 16"),
        (["--steps", "1", "--seq-len", "70"], "--seq-len 70: documents of 70 tokens must be a multiple of segment 16"),
        (["--stages", "64:1", "--keep-at", "1,x"], "--keep-at must be steps separated by commas"),
        (["--stages", "64:1", "--keep-at", "0"], "--keep-at steps must be positive"),
    ],
)
def test_bad_stages_are_one_line(flags, message, data, tmp_path, capsys):
    argv = ["train", "uio", "--model", "tiny-random-llama", "--data", str(data), "--segment", "16",
            "--memory-tokens", "4", "--out", str(tmp_path / "o"), *flags]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_the_transfer_heads_own_learning_rate_moves_it_alone(data, tmp_path, tiny_llama):
    from safetensors.torch import load_file

    def first_step(scale: float) -> dict[str, dict[str, torch.Tensor]]:
        options = {"strategy": "unbiased", "window": 1, "transfer_lr_scale": scale}
        out = tmp_path / str(scale)
        train(spec(data, out, steps=1, checkpoint_every=1, warmup=0.0, train_options=options),
              progress=False, loaded=tiny_llama)  # fmt: skip
        return {part: load_file(out / f"{part}_adapter.safetensors") for part in ("encoder", "transfer")}

    plain, scaled = first_step(1.0), first_step(10.0)
    encoder = plain["encoder"].keys()
    assert encoder and all(torch.equal(plain["encoder"][k], scaled["encoder"][k]) for k in encoder)
    # LoRA B starts at zero, and Adam's first step moves each weight by the learning rate: 10x as far.
    moved = [k for k in plain["transfer"] if "lora_B" in k]
    assert any(plain["transfer"][k].abs().max() > 0 for k in moved)
    for k in moved:
        torch.testing.assert_close(scaled["transfer"][k], 10 * plain["transfer"][k])


def test_objective_autoencode_is_uios_own_loss(data, tmp_path, capsys):
    """`--objective autoencode` (the docs' auto-encoding recipe) reaches UIO's train config; RMT has no such loss."""
    argv = ["train", "{method}", "--model", "tiny-random-llama", "--data", str(data), "--seq-len", "64",
            "--steps", "1", "--segment", "16", "--memory-tokens", "4", "--objective", "autoencode", "--quiet",
            "--out"]  # fmt: skip
    assert main([arg.format(method="uio") for arg in argv] + [str(tmp_path / "uio")]) == 0
    written = json.loads((tmp_path / "uio" / "training.json").read_text())
    assert written["train_options"]["objective"] == "autoencode" and written["objective"] == "lm"
    assert main([arg.format(method="rmt") for arg in argv] + [str(tmp_path / "rmt")]) == 2
    assert "rmt has none" in capsys.readouterr().err


def test_ctrl_c_in_training_says_how_to_resume(data, tmp_path, monkeypatch, capsys):
    import harness.training
    from harness.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.training, "train", interrupted)
    argv = ["train", "uio", "--model", "tiny-random-llama", "--data", str(data), "--steps", "1", "--seq-len", "64",
            "--out", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    assert main(argv) == 130
    assert "rerun with --resume to go on from it" in capsys.readouterr().err
