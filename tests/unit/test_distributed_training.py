"""Training under `accelerate launch` (2 processes, gloo on CPU) and to trackers (TensorBoard)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.cli import main
from harness.training import TrainSpec, train
from methods.base import METHODS

ROOT = Path(__file__).resolve().parents[2]
BOOK = "It was a bright cold day in April, and the clocks were striking thirteen. " * 120
# bptt draws no random numbers, so one process over documents (0, 1) and two processes over one each agree;
# a constant schedule without warm-up is the same whatever --steps says, so a 2-step run can be resumed to 4.
TRAIN = [
    "train", "uio", "--model", "tiny-random-llama", "--seq-len", "64", "--segment", "16", "--memory-tokens", "4",
    "--lora-rank", "2", "--lora-alpha", "8", "--strategy", "bptt", "--lr", "1e-2", "--schedule", "constant",
    "--warmup", "0", "--checkpoint-every", "2", "--quiet",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _launch(books: Path, out: Path, steps: int, *extra: str) -> None:
    """`accelerate launch` with the shipped 2-process CPU config."""
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(ROOT / "configs" / "accelerate" / "ddp_cpu.yaml"), "--main_process_port", str(_free_port()),
        "-m", "harness.cli",
    ]  # fmt: skip
    args = [*TRAIN, "--data", str(books), "--steps", str(steps), "--out", str(out), *extra]
    subprocess.run([*launch, *args], check=True, env=_env(), capture_output=True, cwd=ROOT)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return {f"{path.name}/{k}": v for path in sorted(out.glob("*.safetensors")) for k, v in load_file(path).items()}


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    folder = tmp_path_factory.mktemp("books")
    (folder / "1342_a_book.txt").write_text(BOOK)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, books):
    """One process with 2 documents per step; two processes with 1 each; two processes cut at 2 steps, resumed."""
    root = tmp_path_factory.mktemp("ddp")
    assert main([*TRAIN, "--data", str(books), "--steps", "4", "--accumulation", "2", "--out", str(root / "one")]) == 0
    _launch(books, root / "two", 4)
    _launch(books, root / "cut", 2)
    _launch(books, root / "cut", 4, "--resume")
    return root


def test_two_processes_train_as_one_over_the_same_global_batch(runs, tiny_llama):
    one, two = _log(runs / "one"), _log(runs / "two")
    assert [row["loss"] for row in two] == pytest.approx([row["loss"] for row in one], rel=1e-6)
    assert len({row["loss"] for row in one}) == 4  # training moves the loss: the comparison means something
    # Adam divides by the gradient's own scale, so where a gradient is at rounding level (a LoRA A while its
    # B is near zero) the order of the sum moves a weight by up to lr: compare tensors by norm, and outputs.
    single, double = _weights(runs / "one"), _weights(runs / "two")
    assert single.keys() == double.keys() and single
    for name, tensor in single.items():
        assert (double[name] - tensor).norm() <= 1e-2 * tensor.norm() + 1e-7, name
    cls = METHODS.get("uio")
    ids = torch.randint(0, 256, (64,), generator=torch.Generator().manual_seed(1))
    options = {"segment": 16, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 8}
    scores = [cls(*tiny_llama, cls.Config(**options, checkpoint=str(runs / out))).score(ids) for out in ("one", "two")]
    torch.testing.assert_close(scores[1], scores[0], rtol=1e-4, atol=1e-5)


def test_a_two_process_run_resumes_exactly(runs):
    assert [row["loss"] for row in _log(runs / "cut")] == [row["loss"] for row in _log(runs / "two")]
    whole, resumed = _weights(runs / "two"), _weights(runs / "cut")
    assert all(torch.equal(resumed[name], tensor) for name, tensor in whole.items())


def test_resuming_on_another_number_of_processes_is_one_line(runs, books, tmp_path, capsys):
    cut = tmp_path / "cut"
    shutil.copytree(runs / "cut", cut)
    argv = [*TRAIN, "--data", str(books), "--steps", "6", "--out", str(cut), "--resume"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on 2 processes, this run has 1" in err[0]


def test_tensorboard_receives_every_logged_step(books, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = TrainSpec(
        method="uio", model="tiny-random-llama", data=str(books), steps=3, seq_len=64, out=str(tmp_path / "ck"),
        method_options={"segment": 16, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 8},
        report_to=["tensorboard"],
    )  # fmt: skip
    log = train(spec, progress=False)
    events = list((tmp_path / "ck.logs" / "lch-train").glob("events.out.tfevents.*"))  # the hparams sit below
    assert len(events) == 1 and not list((tmp_path / "ck").rglob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events[0].parent)).Reload()
    scalars = accumulator.Scalars("loss")
    assert [event.step for event in scalars] == [1, 2, 3]
    assert [event.value for event in scalars] == pytest.approx([row["loss"] for row in log], rel=1e-6)
