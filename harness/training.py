"""The training loop every trainable method shares: optimizer, schedule, clipping, processes, logging, checkpoints.

Its data (`--data` as books, jsonl/parquet records or a `datasets` dataset; texts, or prompt/answer records)
comes from `harness.training_data`, its objective (`lm`, `answer`, `distill`) from `harness.objectives`.

A trainable method class has a `TrainConfig` (its gradient options) and, per instance,
`train_config`, `trainable_parameters()`, `backward_document(input_ids, token_loss) -> loss` (it runs its
own backward passes; `token_loss`, a `methods.token_loss.TokenLoss` or None for its official loss, says
which predictions count and against what: the objective, from `harness.objectives`), `save(dir)` and
`load(dir)`, plus `check_document_length(config, seq_len)`; optionally `parameter_groups()`, parameters
with their own learning-rate multiple. This module owns everything else, so a new trainable method plugs
in without changing it.

Checkpoints hold the method's files (adapters, loadable by `lch eval --method-opt checkpoint=DIR`),
`training.json` (what was trained, for `--resume` and for refusing another method's folder) and
`trainer_state.pt` (optimizer, scheduler, RNG states, data position, the loss log). Resuming from
the last checkpoint after a kill -9 reproduces the uninterrupted run's losses.

Under `accelerate launch` (DDP over gloo on CPU or NCCL on GPUs; configs in `configs/accelerate/`) the
`Accelerator` places each process on its device, runs bf16 autocast on GPUs, averages the gradients and
the logged loss over processes, and reports to the trackers of `--report-to`. Each process takes every
N-th document of the global order, so N processes with `--accumulation A` step on the same documents
as one process with `A * N`. Methods run their own backward passes (UIO's incremental TBPTT backpropagates
segment by segment), so there is no single module forward for DDP's hooks: gradients are averaged
once per optimizer step with `Accelerator.reduce`, the one all-reduce DDP would do. The checkpoint is
lch's own format (the method's files, not `save_state`), written by the main process; it holds every
process's RNG state, and a resume needs the same number of processes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from harness.checkpoints import steps_seen
from harness.core.checkpoint_files import LOG_FILE, RESOLVED_KEY, SEEN_KEY, SPEC_FILE, TRAINED_KEY
from harness.core.errors import UserError
from harness.models import load_model
from harness.objectives import check_teacher_window, document_loss
from harness.training_data import (
    Documents,
    RecordDocuments,
    VaryingDocuments,
    load_records,
    load_texts,
    record_examples,
    tokenize,
)

STATE_FILE = "trainer_state.pt"
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # --report-to -> its package


class Stage(BaseModel):
    """A stretch of training on documents of one length, or of lengths drawn from a set (`lengths`).

    With `lengths` (`--stages 64/128/256:100`, BABILong's `--vary_n_segments` over 1..n segments) each
    document's length is drawn from the set and `seq_len` is the longest. For prompt/answer records
    `seq_len` caps the records of the stage: each is used whole, and a longer one is left out of it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq_len: int = Field(ge=1)
    steps: int = Field(ge=1)
    lengths: list[int] | None = Field(None, min_length=2)

    @model_validator(mode="after")
    def _longest(self) -> Stage:
        if self.lengths is not None and (min(self.lengths) < 1 or max(self.lengths) != self.seq_len):
            raise ValueError(f"a stage's lengths are positive and the longest is its seq_len, got {self.lengths}")
        return self


class TrainSpec(BaseModel):
    """One training run. Optimizer defaults are UIO-LLMs' official ones (AdamW, `train.py`, `src/misc.py`).

    A method's `TRAINING_DEFAULTS` (LongLoRA's and RMT's optimizer settings, LongLoRA's activation
    checkpointing) replace them for `lch train` when the user gives none.
    The run is `steps` steps on `seq_len`-token documents, or `stages` (`--stages 4096:60,16384:20`): one
    optimizer and one warm-up + cosine schedule over all their steps, each stage on documents of its length.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    method_options: dict[str, Any] = {}
    train_options: dict[str, Any] = {}
    model: str = "smollm2-135m"
    dtype: str = "float32"
    device: str = "cpu"
    data: str
    text_field: str = "text"
    prompt_field: str | None = None
    answer_field: str | None = None
    loss: Literal["all", "answer", "long"] = "all"
    objective: Literal["lm", "distill"] = "lm"
    split: str = "train"
    allow_test_data: bool = False
    steps: int | None = Field(None, ge=1)
    seq_len: int | None = Field(None, ge=1)
    stages: list[Stage] | None = Field(None, min_length=1)
    accumulation: int = Field(1, ge=1)
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.1, ge=0)
    clip: float = Field(1.0, gt=0)
    warmup: float = Field(0.01, ge=0, lt=1)
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    checkpoint_every: int = Field(10, ge=1)
    keep_at: list[int] = []
    activation_checkpointing: bool = False
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = []
    logging_dir: str | None = None
    seed: int = 0
    out: str

    @model_validator(mode="after")
    def _one_plan(self) -> TrainSpec:
        if self.stages is None and (self.steps is None or self.seq_len is None):
            raise ValueError("give --steps and --seq-len, or --stages LEN:STEPS,...")
        if self.stages is not None and (self.steps is not None or self.seq_len is not None):
            raise ValueError("--stages replaces --steps and --seq-len: give one or the other")
        if self.logging_dir is not None and not self.report_to:
            raise ValueError("--logging-dir is where trackers write: add --report-to tensorboard, wandb or mlflow")
        missing = [name for name in self.report_to if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None]
        if missing:
            raise ValueError(f"--report-to {missing[0]} needs its package: pip install {TRACKER_PACKAGES[missing[0]]}")
        if (self.prompt_field is None) != (self.answer_field is None):
            raise ValueError("give --prompt-field and --answer-field together (records of a prompt and its answer)")
        if self.loss == "answer" and self.prompt_field is None:
            raise ValueError("--loss answer needs records with a prompt and an answer: --prompt-field, --answer-field")
        if self.records and any(stage.lengths for stage in self.plan):
            raise ValueError(
                "records are used whole, at their own lengths: a stage's length caps them (no LEN/LEN sets)"
            )
        return self

    @property
    def teacher(self) -> bool:
        """Each document needs the base model's log-probs over it: `--objective distill` or `--loss long`."""
        return self.objective == "distill" or self.loss == "long"

    @property
    def records(self) -> bool:
        """The data are prompt/answer records (else texts cut into documents)."""
        return self.prompt_field is not None

    @property
    def plan(self) -> list[Stage]:
        """The stages, in order (one for a plain `steps` x `seq_len` run)."""
        return self.stages or [Stage(seq_len=self.seq_len, steps=self.steps)]

    @property
    def total_steps(self) -> int:
        """Optimizer steps over all stages."""
        return sum(stage.steps for stage in self.plan)

    def stage_at(self, step: int) -> int:
        """Index of the stage that optimizer step `step` (0-based) belongs to."""
        end = 0
        for index, stage in enumerate(self.plan):
            end += stage.steps
            if step < end:
                return index
        return len(self.plan) - 1

    @classmethod
    def written(cls, spec: dict[str, Any]) -> TrainSpec:
        """The spec of a checkpoint's `training.json`, without what training added beside it."""
        return cls(**{key: value for key, value in spec.items() if key not in (TRAINED_KEY, RESOLVED_KEY, SEEN_KEY)})

    def identity(self) -> dict[str, Any]:
        """What must match for `--resume` to go on from a checkpoint (not `steps`, `checkpoint_every`, `keep_at`)."""
        how = {"steps", "checkpoint_every", "keep_at", "activation_checkpointing", "out", "report_to", "logging_dir"}
        return self.model_dump(mode="json", exclude=how)

    @property
    def tracking_dir(self) -> str:
        """Where trackers write (TensorBoard's event files): beside `out`, since checkpoints swap `out` whole."""
        return self.logging_dir or f"{self.out}.logs"


def schedule(steps: int, warmup: float, shape: str = "cosine") -> Callable[[int], float]:
    """Linear warm-up from 0 over `warmup` of the steps (at least one), then cosine or linear decay to 0, or constant.

    `linear` is transformers' `get_linear_schedule_with_warmup` after the warm-up (RMT's official scripts).
    """
    warm = max(1, round(warmup * steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if shape == "constant":
            return 1.0
        if shape == "linear":
            return max(0.0, (steps - step) / max(1, steps - warm))
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, steps - warm))))

    return factor


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.random.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.random.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def _checkpoint(method, spec: TrainSpec, state: dict[str, Any]) -> None:
    """Write the whole checkpoint beside `out`, then swap it in, so a kill leaves one complete checkpoint.

    `training.json` holds the spec and, under `trained`, what the method says its weights have seen so
    far (`trained_extent` of the longest document trained on: UIO's most memories), under `seen` the
    steps, documents and tokens trained on.
    """
    out = Path(spec.out)
    staging, old = out.with_name(out.name + ".staging"), out.with_name(out.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    method.save(staging)
    longest = max(stage.seq_len for stage in spec.plan[: state["stage"] + 1])
    extent = getattr(method, "trained_extent", lambda seq_len: {"longest_document": seq_len})(longest)
    resolved = {key: getattr(method.config, key) for key in type(method.config).checkpoint_options}
    # rows logged before rows counted their documents ran on the same processes as this run
    seen = steps_seen(state["log"], spec.accumulation * state.get("processes", 1))
    written = {**spec.model_dump(mode="json"), TRAINED_KEY: extent, RESOLVED_KEY: resolved, SEEN_KEY: seen}
    (staging / SPEC_FILE).write_text(json.dumps(written, indent=2))
    (staging / LOG_FILE).write_text("".join(json.dumps(row) + "\n" for row in state["log"]))
    torch.save(state, staging / STATE_FILE)
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _keep(spec: TrainSpec, step: int) -> None:
    """Copy the checkpoint just written to `OUT@STEP` without the trainer state, to evaluate (`--keep-at`)."""
    kept = Path(f"{spec.out}@{step}")
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(spec.out, kept, ignore=shutil.ignore_patterns(STATE_FILE))


def _previous(spec: TrainSpec) -> Path | None:
    """The folder of an earlier run's checkpoint (`out`, or `out.old` when a swap was cut short)."""
    out = Path(spec.out)
    for folder in (out, out.with_name(out.name + ".old")):
        if (folder / SPEC_FILE).is_file():
            return folder
    return None


def check_out(spec: TrainSpec, resume: bool) -> Path | None:
    """Validate `--out` against `--resume`; return the checkpoint to resume from, if any."""
    out, previous = Path(spec.out), _previous(spec)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file")
    if previous is None:
        if out.is_dir() and any(out.iterdir()):
            raise UserError(f"--out '{out}' is not empty and holds no lch training checkpoint")
        if resume:
            raise UserError(f"--resume: no checkpoint in --out '{out}' to go on from (leave out --resume to start)")
        return None
    before = json.loads((previous / SPEC_FILE).read_text())
    if before.get("method") != spec.method:
        raise UserError(f"--out '{out}' holds a '{before.get('method')}' checkpoint, not '{spec.method}'")
    if not resume:
        raise UserError(f"--out '{out}' holds a checkpoint: pass --resume to go on, or choose another --out")
    stored = TrainSpec.written(before).identity()
    changed = sorted(key for key, value in spec.identity().items() if stored.get(key) != value)
    if changed:
        raise UserError(f"--resume: {', '.join(changed)} differ from the checkpoint's ({previous / SPEC_FILE})")
    return previous


def load_state(previous: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint to resume; a missing or unreadable one is a one-line error."""
    path = previous / STATE_FILE
    if not path.is_file():
        raise UserError(f"--resume: checkpoint '{previous}' has no {STATE_FILE} (incomplete: train into a new --out)")
    try:
        state = torch.load(path, weights_only=False)
    except Exception as error:  # noqa: BLE001 - a truncated zip, random bytes, a pickle of something else
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"--resume: '{path}' cannot be read ({reason})") from None
    if not isinstance(state, dict) or not {"step", "position", "log", "optimizer", "scheduler", "rng"} <= set(state):
        raise UserError(f"--resume: '{path}' is not an lch trainer state")
    return state


def build_trainable(spec: TrainSpec, config, train_config, loaded=None, device: str | None = None):
    """The method of `spec` with `config` on its base model (on `device`, else `spec.device`), `train_config` set."""
    cls = trainable_class(spec.method)
    model, tokenizer = loaded or load_model(spec.model, spec.dtype, device or spec.device)
    window = model.config.max_position_embeddings
    if hasattr(cls, "training_options"):  # options the method fixes from the training lengths (LongLoRA's RoPE factor)
        from harness.core.validation import validate

        longest = max(stage.seq_len for stage in spec.plan)
        options = cls.training_options(config.model_dump(exclude_unset=True), longest, window)
        config = validate(cls.Config, options, f"method '{spec.method}'")
    check_lengths(cls, config, spec, window)
    method = cls(model, tokenizer, config)
    method.train_config = train_config
    return method


def check_lengths(cls, config, spec: TrainSpec, window: int | None = None) -> None:
    """Each stage's documents fit the method; an error names the flag that set the length."""
    for stage in spec.plan:
        flag = f"--stages {stage.seq_len}:{stage.steps}" if spec.stages else "--seq-len"
        check_length(cls, config, stage.seq_len, flag, window)


def check_length(cls, config, seq_len: int, flag: str, window: int | None = None) -> None:
    """`cls.check_document_length`, its error prefixed by `flag` (`--seq-len 70: documents of 70 tokens ...`)."""
    try:
        cls.check_document_length(config, seq_len, window)
    except UserError as error:
        where = f"{flag} {seq_len}" if flag == "--seq-len" else flag
        raise UserError(f"{where}: {error}") from None


def trainable_class(name: str):
    """The registered method class `name`, which must be trainable (declare a `TrainConfig`)."""
    from methods.base import METHODS

    cls = METHODS.get(name)
    if not hasattr(cls, "TrainConfig"):
        trainable = [other for other in METHODS.names() if hasattr(METHODS.get(other), "TrainConfig")]
        raise UserError(f"method '{name}' is not trainable. Trainable: {', '.join(trainable)}")
    return cls


def method_configs(spec: TrainSpec):
    """The method's config and train config from `spec`, validated (one line per error) before any loading."""
    from harness.core.validation import validate

    cls = trainable_class(spec.method)
    where = f"method '{spec.method}'"
    config = validate(cls.Config, spec.method_options, where)
    check_lengths(cls, config, spec)
    if spec.loss == "long" and not hasattr(config, "segment"):  # its local context
        raise UserError(f"--loss long needs a method with segments (uio, rmt); {spec.method} has none")
    return config, validate(cls.TrainConfig, spec.train_options, where)


def train(
    spec: TrainSpec, resume: bool = False, progress: bool = True, loaded=None, on_step: Callable | None = None
) -> list[dict[str, Any]]:
    """Train `spec.method` for `spec.total_steps` optimizer steps, stage by stage; return the per-step log.

    Args:
        spec: the run.
        resume: go on from the checkpoint in `spec.out`.
        progress: show a tqdm bar with the loss and tokens/s.
        loaded: `(model, tokenizer)` already loaded (tests), else `spec.model` is loaded.
        on_step: called with each log row after the step (and its checkpoint, if any).
    """
    from accelerate import Accelerator, PartialState
    from accelerate.utils import gather_object

    config, train_config = method_configs(spec)  # validated before anything is read or loaded
    previous = check_out(spec, resume)
    resumed = load_state(previous) if previous is not None else None
    if spec.records:
        texts = load_records(spec.data, spec.prompt_field, spec.answer_field, spec.split, spec.allow_test_data)
    else:
        texts = load_texts(spec.data, spec.text_field, spec.split, spec.allow_test_data)
    torch.manual_seed(spec.seed)  # adapters draw their initial weights from it
    # Under `accelerate launch` (torchrun): this process's rank and device; on CPU, gloo between processes.
    process = PartialState(cpu=spec.device == "cpu")
    device = spec.device if process.num_processes == 1 or spec.device == "cpu" else str(process.device)
    if resumed is not None and resumed.get("processes", 1) != process.num_processes:
        raise UserError(f"--resume: the checkpoint was trained on {resumed.get('processes', 1)} processes, "
                        f"this run has {process.num_processes} (the data order depends on it)")  # fmt: skip
    method = build_trainable(spec, config, train_config, loaded, device)
    method.backbone.checkpoint_layers = spec.activation_checkpointing
    parameters = method.trainable_parameters()
    # A method may give some parameters their own learning rate (UIO's transfer_lr_scale): (parameters, multiple).
    groups = method.parameter_groups() if hasattr(method, "parameter_groups") else [(parameters, 1.0)]
    optimizer = torch.optim.AdamW(
        [{"params": group, "lr": spec.lr * scale} for group, scale in groups],
        lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay,
    )  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(spec.total_steps, spec.warmup, spec.schedule))
    state: dict[str, Any] = {"step": 0, "stage": 0, "position": 0, "log": []}  # position: documents of the stage
    if previous is not None:
        method.load(previous)
        state = resumed
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"][process.process_index] if isinstance(state["rng"], list) else state["rng"])
    state.setdefault("stage", 0)  # a checkpoint from before stages: one stage
    documents = stage_documents(spec, texts, method.tokenizer, progress)
    if spec.teacher:
        check_teacher_window(spec, method.model)
    segment = getattr(method.config, "segment", None)  # the local context of `--loss long`
    cuda = method.backbone.device.type == "cuda"
    accelerator = Accelerator(
        cpu=spec.device == "cpu",
        mixed_precision="bf16" if cuda else "no",
        log_with=spec.report_to or None,
        project_dir=spec.tracking_dir if spec.report_to else None,
    )
    if spec.report_to:
        accelerator.init_trackers("lch-train", config=_hyperparameters(spec))
    total, shown = spec.total_steps, progress and accelerator.is_main_process
    per_step = spec.accumulation * process.num_processes  # documents in one optimizer step
    with tqdm(total=total, initial=state["step"], disable=not shown, unit="step", dynamic_ncols=True) as bar:
        while state["step"] < total:
            stage = spec.stage_at(state["step"])
            if stage != state["stage"]:
                state["stage"], state["position"] = stage, 0
            seq_len = spec.plan[stage].seq_len
            start, losses, tokens, counted, teacher_s = time.perf_counter(), [], 0, 0, 0.0
            for _ in range(spec.accumulation):
                index = state["position"] * process.num_processes + process.process_index
                example = documents[stage][index]
                with accelerator.autocast():
                    before = time.perf_counter()
                    token_loss = document_loss(spec, example, method.model, segment)
                    teacher_s += time.perf_counter() - before
                    losses.append(method.backward_document(example.ids, token_loss))
                tokens += example.ids.numel()
                counted += example.ids.numel() - 1 if token_loss is None else int(token_loss.weights.count_nonzero())
                state["position"] += 1
            loss = _average(accelerator, parameters, sum(losses) / len(losses), spec.accumulation)
            tokens, counted = _total(accelerator, tokens), _total(accelerator, counted)
            norm = float(torch.nn.utils.clip_grad_norm_(parameters, spec.clip))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            seconds = time.perf_counter() - start
            row = {
                "step": state["step"], "stage": stage, "seq_len": seq_len, "loss": loss,
                "grad_norm": norm, "lr": lr, "seconds": seconds, "documents": per_step,
                "tokens": tokens, "tokens_per_s": tokens / seconds, "counted": counted,
            }  # fmt: skip
            if spec.teacher:
                row["teacher_seconds"] = teacher_s  # the teacher's forward passes inside `seconds`
            state["log"].append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
            bar.update(1)
            if shown:
                bar.write(f"step {row['step']}: loss {row['loss']:.4f}, {row['tokens_per_s']:.0f} tokens/s")
            accelerator.log(row, step=row["step"])
            kept = state["step"] in spec.keep_at
            if state["step"] % spec.checkpoint_every == 0 or state["step"] == total or kept:
                rng = gather_object([_rng_state()]) if accelerator.num_processes > 1 else _rng_state()
                if accelerator.is_main_process:
                    state |= {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
                              "processes": accelerator.num_processes}  # fmt: skip
                    _checkpoint(method, spec, state)
                    if kept:
                        _keep(spec, state["step"])
                accelerator.wait_for_everyone()
            if on_step is not None:
                on_step(row)
    accelerator.end_training()
    return state["log"]


def stage_documents(spec: TrainSpec, texts, tokenizer, progress: bool = True) -> list:
    """Each stage's documents, in its own seeded order from its first document on.

    Texts are cut into windows of the stage's length (or of each length of its set); records are used whole
    up to the stage's length, and how many a stage leaves out is said on stderr.
    """
    if spec.records:
        examples = record_examples(texts, tokenizer)  # tokenized once, for every stage
        stages = [RecordDocuments(texts, tokenizer, stage.seq_len, spec.seed, examples) for stage in spec.plan]
        for number, documents in enumerate(stages, 1):
            if documents.left_out and progress:
                print(f"lch: stage {number} leaves out {documents.left_out} records longer than "
                      f"{spec.plan[number - 1].seq_len} tokens", file=sys.stderr)  # fmt: skip
        return stages
    tokens = tokenize(texts, tokenizer)
    return [
        VaryingDocuments(texts, tokenizer, stage.lengths, spec.seed, tokens)
        if stage.lengths
        else Documents(texts, tokenizer, stage.seq_len, spec.seed, tokens=tokens)
        for stage in spec.plan
    ]


def _average(accelerator, parameters: list[torch.nn.Parameter], loss: float, accumulation: int) -> float:
    """Gradients and loss averaged over the accumulated documents and the processes; returns the loss.

    Across processes the gradients travel as one flat tensor (one all-reduce per step); a parameter a
    process left without gradient counts as zero there, so every process sends the same shape.
    """
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad /= accumulation
    if accelerator.num_processes == 1:
        return loss
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = accelerator.reduce(torch.cat([grad.flatten() for grad in grads]), reduction="mean")
    for parameter, grad in zip(parameters, flat.split([p.numel() for p in parameters]), strict=True):
        parameter.grad = grad.view_as(parameter)
    return float(accelerator.reduce(torch.tensor([loss], dtype=torch.float64, device=flat.device), reduction="mean"))


def _total(accelerator, count: int) -> int:
    """`count` summed over the processes."""
    if accelerator.num_processes == 1:
        return count
    return int(accelerator.reduce(torch.tensor([count], device=accelerator.device), reduction="sum"))


def _hyperparameters(spec: TrainSpec) -> dict[str, Any]:
    """The spec flattened to the scalars trackers accept (TensorBoard's hparams take no lists or dicts)."""
    flat = {}
    for key, value in spec.model_dump(mode="json").items():
        flat[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return flat
