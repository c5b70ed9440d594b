"""Running one cell: resume per sample, isolate failures, meter every sample, report to a `Sink`.

A cell reports what it learns to a `Sink` (open, plan, add samples, close). Locally the sink is a
`Recorder` over the store and the progress bar; with `--executor ray` (`harness/ray_executor.py`) a
worker's sink sends the same calls to the driver, whose `Recorder` applies them, so the store has one writer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm import tqdm

from harness.metering import Metered, cpu_contention, flop_count, peak_memory
from harness.shared_context import SharedContext
from harness.store import Store
from harness.sweep import Cell
from methods.base import METHODS, InputTooLong
from tasks.base import TASKS, Score

WARMUP_TOKENS = 32


@dataclass
class Outcome:
    """What happened to one cell in this run."""

    cell: Cell
    status: str
    ran: int
    error: str | None = None


class Sink(Protocol):
    """Where `run_cell` sends a cell's results, in order: `open_cell`, `plan`, `add_sample`s, `close_cell`."""

    def open_cell(self, cell_id: str, run_id: str, fields: dict) -> None:
        """The cell starts in this run (`Store.open_cell`)."""

    def plan(self, cell_id: str, instances: int, samples: int, stored: int) -> None:
        """The cell has `instances` instances for its `samples` samples, `stored` of them stored before."""

    def add_sample(self, cell_id: str, idx: int, row: dict) -> None:
        """A finished sample (`Store.add_sample`)."""

    def close_cell(self, cell_id: str, status: str, **fields) -> None:
        """The cell's final status and `Store.close_cell`'s other fields (error, aggregate, samples)."""


class Recorder:
    """The sink that writes: the store, the progress bar, and a line per cell that did not finish."""

    def __init__(self, store: Store, bar: tqdm):
        """Write into `store` and move `bar`."""
        self.store = store
        self.bar = bar
        self.names: dict[str, str] = {}
        self.added: dict[str, int] = {}  # samples added per cell in this run
        self.closed: dict[str, tuple[str, str | None]] = {}  # cell -> (status, error)

    def open_cell(self, cell_id: str, run_id: str, fields: dict) -> None:
        """Open the cell in the store and name it on the bar."""
        self.names[cell_id] = f"{fields['label']} {fields['task']}@{fields['length']}"
        self.added[cell_id] = 0
        self.store.open_cell(cell_id, run_id, fields)
        self.bar.set_description(self.names[cell_id])

    def plan(self, cell_id: str, instances: int, samples: int, stored: int) -> None:
        """Count the cell's extra instances (LongBench gives several per sample) and its stored ones."""
        self.bar.total += instances - samples
        self.bar.update(stored)

    def add_sample(self, cell_id: str, idx: int, row: dict) -> None:
        """Store the sample."""
        self.store.add_sample(cell_id, idx, row)
        self.added[cell_id] += 1
        self.bar.update(1)

    def close_cell(self, cell_id: str, status: str, **fields) -> None:
        """Store the cell's status; say why it did not finish."""
        self.store.close_cell(cell_id, status, **fields)
        error = fields.get("error")
        self.closed[cell_id] = (status, error)
        if status != "done":
            first_line = (error or "").partition("\n")[0][:200]
            self.bar.write(f"cell {self.names.get(cell_id, cell_id)}: {status} ({first_line})")


def progress_bar(todo: list[Cell], progress: bool) -> tqdm:
    """The bar over the samples of the cells to run (a `Recorder` grows it for tasks with more instances)."""
    return tqdm(total=sum(c.samples for c in todo), disable=not progress, unit="sample", dynamic_ncols=True)


def stored_scores(store: Store, cell: Cell) -> dict[int, Score]:
    """The cell's samples already in the store, by index: what a rerun skips and aggregates with its new ones."""
    return {row["idx"]: _stored_score(row) for row in store.samples(cell.cell_id)}


def run_cell(
    cell: Cell, loaded, sink: Sink, run_id: str, stored: dict[int, Score], flops: bool, method=None
) -> Outcome:
    """Run the samples of `cell` not in `stored`, sending each to `sink` as it finishes; never raises for the cell."""
    model, tokenizer = loaded
    device = model.lm_head.weight.device
    sink.open_cell(cell.cell_id, run_id, cell_fields(cell))
    scores = dict(stored)
    ran = 0
    try:
        method = method or METHODS.get(cell.method)(model, tokenizer, cell.method_config)
        task = TASKS.get(cell.task)(cell.task_config, tokenizer)
        instances = task.instances(cell.length, cell.samples, cell.seed)
        # A task may give several instances per sample (LongBench).
        sink.plan(cell.cell_id, len(instances), cell.samples, len(stored.keys() & set(range(len(instances)))))
        todo = [(i, instance) for i, instance in enumerate(instances) if i not in stored]
        if todo:
            _warm_up(method, todo[0][1])
        shared = SharedContext(method, instances)
        for index, instance in todo:
            # Over-length inputs raise InputTooLong inside the method: tasks such as LongBench truncate
            # to the method's budget first, so the raw instance length is no verdict.
            method.reset()
            metered = Metered(method, device)
            with flop_count(flops, metered.costs), peak_memory(device, metered.costs), cpu_contention(metered.costs):
                score = task.evaluate(shared.ask(metered, instance), instance)
            row = _sample_row(instance, score, metered, method, shared.details(instance, metered))
            sink.add_sample(cell.cell_id, index, row)
            scores[index] = _read_back(row)
            method.reset()  # free the document's cache before the next sample's baseline is taken
            ran += 1
        aggregate = task.aggregate([scores[index] for index in sorted(scores)][: len(instances)])
        sink.close_cell(cell.cell_id, "done", aggregate=aggregate, samples=cell.samples)
        return Outcome(cell, "done", ran)
    except InputTooLong as error:
        return _fail(sink, cell, "over_length", error, ran)
    except (torch.OutOfMemoryError, MemoryError) as error:
        return _fail(sink, cell, "oom", error, ran)
    except Exception as error:  # noqa: BLE001 - a failing cell is a result; the sweep goes on
        return _fail(sink, cell, "failed", error, ran)


def _fail(sink: Sink, cell: Cell, status: str, error: BaseException, ran: int) -> Outcome:
    message = error_line(error)
    sink.close_cell(cell.cell_id, status, error=message)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return Outcome(cell, status, ran, message)


def error_line(error: BaseException) -> str:
    """How a cell's error is stored: `Type: message`."""
    return f"{type(error).__name__}: {error}".strip()


def _warm_up(method, instance) -> None:
    """One short prefill + decode so lazy initialisation is not billed to the first sample."""
    method.reset()
    method.prefill(torch.tensor(instance.input_ids[:WARMUP_TOKENS]))
    method.decode(2, stop_ids=[])
    method.reset()


def cell_fields(cell: Cell) -> dict:
    """The `cells` table's fields of `cell` (`Store.open_cell`)."""
    identity = cell.identity
    return {
        "label": cell.label, "model": cell.model, "dtype": cell.dtype, "device": cell.device,
        "method": cell.method, "method_config": identity["method_config"], "task": cell.task,
        "task_version": cell.task_version, "task_config": identity["task_config"], "headline": cell.headline,
        "length": cell.length, "seed": cell.seed,
    }  # fmt: skip


def _sample_row(instance, score: Score, metered: Metered, method, shared: dict | None) -> dict:
    costs = metered.costs
    return {
        "instance_id": instance.id, "prediction": score.prediction, "target": instance.target,
        "score": score.score, "metrics": score.metrics,
        "metadata": {
            **instance.metadata, **score.details,
            "beyond_trained_window": method.beyond_trained_window(len(instance.input_ids)),
            "causal_score": method.causal_score,
            "beyond_trained_memory": method.beyond_trained_memory(len(instance.input_ids)),
            "untrained": method.untrained,
            "variant": method.variant,
            "others_cpu_share": costs.others_cpu,
            "host_state_bytes": method.host_state_bytes(),
            **({"shared_context": shared} if shared else {}),
        },
        "input_tokens": len(instance.input_ids), "chars": instance.metadata.get("chars"),
        "prefill_s": costs.prefill_s, "decode_s": costs.decode_s, "decode_tokens": score.decode_tokens,
        "peak_mem_bytes": costs.peak_mem_bytes, "flops": costs.flops,
        "prefill_flops": costs.prefill_flops, "decode_flops": costs.decode_flops,
        # the state a prompt left; a sample that read none (autoencode) has none to measure
        "state_bytes": method.state_bytes() if costs.prefill_s is not None else None,
    }  # fmt: skip


def _read_back(row: dict) -> Score:
    """The `Score` that `row` reads back from the store as: its JSON columns round-tripped as the store does.

    So a cell's aggregate is the same whether its samples were stored before or just now, here or on a worker.
    """
    return _stored_score({**row, "metrics": json.dumps(row["metrics"]), "metadata": json.dumps(row["metadata"])})


def _stored_score(row) -> Score:
    """A stored sample as the task's `Score`; `details` come back from the merged metadata column."""
    return Score(
        score=row["score"],
        metrics=json.loads(row["metrics"]),
        prediction=row["prediction"] or "",
        details=json.loads(row["metadata"] or "{}"),
    )
