"""Execute a sweep's cells: resume per sample, isolate failures, show progress, meter every sample."""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from harness.metering import Metered, cpu_contention, flop_count, peak_memory
from harness.models import load_model
from harness.provenance import provenance
from harness.store import FAILED, Store
from harness.sweep import Cell, SweepSpec, expand
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


def run_sweep(
    spec: SweepSpec, retry_failed: bool = False, progress: bool = True, command: str = "", check_methods: bool = False
) -> list[Outcome]:
    """Run every cell of `spec` not yet complete in its store; return what happened to each cell.

    A run is recorded in the store's `runs` table only when it has cells to run, and only once the
    model has loaded, so a bad input or a rerun of a finished sweep leaves the store as it was (a store
    this call created is removed again when it fails before recording a run).

    Args:
        spec: the sweep.
        retry_failed: rerun cells stored as failed, oom or over_length.
        progress: show a progress bar.
        command: the command line stored with the run.
        check_methods: build every method once before the run is recorded, so a method that cannot be
            built (a checkpoint that does not load) is a `UserError` instead of a failed cell
            (`lch eval`; a sweep records the cell and goes on).
    """
    cells = expand(spec)  # validates every name, option, data path and the device before any model is loaded
    created = not Path(spec.output).exists()
    store = Store(spec.output)  # an output that is not an lch store, or cannot be written, stops here
    try:
        outcomes = []
        todo = []
        for cell in cells:
            previous = store.cell(cell.cell_id)
            if previous is not None and previous["status"] in FAILED and not retry_failed:
                outcomes.append(Outcome(cell, previous["status"], 0, previous["error"]))
            elif previous is not None and previous["status"] == "done" and (previous["samples"] or 0) >= cell.samples:
                outcomes.append(Outcome(cell, "done", 0))
            else:
                todo.append(cell)
        if todo:
            outcomes += _run_cells(spec, todo, store, progress, command, check_methods)
    except BaseException:
        store.close()
        if created and not store.has_runs():
            store.remove()
        raise
    store.close()
    order = {cell.cell_id: index for index, cell in enumerate(cells)}
    return sorted(outcomes, key=lambda outcome: order[outcome.cell.cell_id])


def _run_cells(
    spec: SweepSpec, todo: list[Cell], store: Store, progress: bool, command: str, check_methods: bool
) -> list[Outcome]:
    # The model loads before the run is recorded: an unloadable model is a user error that must not touch the store.
    loaded = load_model(spec.model, spec.dtype, spec.device)
    # Built here, a method that cannot be built is the user's error; the cells then use these instances.
    built = {label: METHODS.get(cell.method)(*loaded, cell.method_config) for label, cell in
             {cell.label: cell for cell in todo}.items()} if check_methods else {}  # fmt: skip
    run_id = uuid.uuid4().hex[:12]
    store.start_run(run_id, command or " ".join(sys.argv), provenance(spec.device), spec.model_dump(mode="json"))
    outcomes = []
    try:
        with tqdm(total=sum(c.samples for c in todo), disable=not progress, unit="sample", dynamic_ncols=True) as bar:
            for cell in todo:
                bar.set_description(f"{cell.label} {cell.task}@{cell.length}")
                done = store.sample_indices(cell.cell_id)
                outcomes.append(_run_cell(cell, loaded, store, run_id, done, spec.flops, bar, built.get(cell.label)))
    finally:
        store.finish_run(run_id)
    return outcomes


def _run_cell(cell: Cell, loaded, store: Store, run_id: str, done: set[int], flops: bool, bar, method=None) -> Outcome:
    model, tokenizer = loaded
    device = model.lm_head.weight.device
    store.open_cell(cell.cell_id, run_id, _cell_fields(cell))
    ran = 0
    try:
        method = method or METHODS.get(cell.method)(model, tokenizer, cell.method_config)
        task = TASKS.get(cell.task)(cell.task_config, tokenizer)
        instances = task.instances(cell.length, cell.samples, cell.seed)
        bar.total += len(instances) - cell.samples  # a task may give several instances per sample (LongBench)
        bar.update(len(done & set(range(len(instances)))))
        todo = [(i, instance) for i, instance in enumerate(instances) if i not in done]
        if todo:
            _warm_up(method, todo[0][1])
        for index, instance in todo:
            # Over-length inputs raise InputTooLong inside the method: tasks such as LongBench truncate
            # to the method's budget first, so the raw instance length is no verdict.
            method.reset()
            metered = Metered(method, device)
            with flop_count(flops, metered.costs), peak_memory(device, metered.costs), cpu_contention(metered.costs):
                score = task.evaluate(metered, instance)
            store.add_sample(cell.cell_id, index, _sample_row(instance, score, metered, method))
            method.reset()  # free the document's cache before the next sample's baseline is taken
            ran += 1
            bar.update(1)
        scores = [_stored_score(row) for row in store.samples(cell.cell_id)[: len(instances)]]
        store.close_cell(cell.cell_id, "done", aggregate=task.aggregate(scores), samples=cell.samples)
        return Outcome(cell, "done", ran)
    except InputTooLong as error:
        return _fail(store, cell, "over_length", error, ran, bar)
    except (torch.OutOfMemoryError, MemoryError) as error:
        return _fail(store, cell, "oom", error, ran, bar)
    except Exception as error:  # noqa: BLE001 - a failing cell is a result; the sweep goes on
        return _fail(store, cell, "failed", error, ran, bar)


def _fail(store: Store, cell: Cell, status: str, error: BaseException, ran: int, bar) -> Outcome:
    message = f"{type(error).__name__}: {error}".strip()
    store.close_cell(cell.cell_id, status, error=message)
    bar.write(f"cell {cell.label} {cell.task}@{cell.length}: {status} ({message.splitlines()[0][:200]})")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return Outcome(cell, status, ran, message)


def _warm_up(method, instance) -> None:
    """One short prefill + decode so lazy initialisation is not billed to the first sample."""
    method.reset()
    method.prefill(torch.tensor(instance.input_ids[:WARMUP_TOKENS]))
    method.decode(2, stop_ids=[])
    method.reset()


def _cell_fields(cell: Cell) -> dict:
    identity = cell.identity
    return {
        "label": cell.label, "model": cell.model, "dtype": cell.dtype, "device": cell.device,
        "method": cell.method, "method_config": identity["method_config"], "task": cell.task,
        "task_version": cell.task_version, "task_config": identity["task_config"], "headline": cell.headline,
        "length": cell.length, "seed": cell.seed,
    }  # fmt: skip


def _sample_row(instance, score: Score, metered: Metered, method) -> dict:
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
        },
        "input_tokens": len(instance.input_ids), "chars": instance.metadata.get("chars"),
        "prefill_s": costs.prefill_s, "decode_s": costs.decode_s, "decode_tokens": score.decode_tokens,
        "peak_mem_bytes": costs.peak_mem_bytes, "state_bytes": method.state_bytes(), "flops": costs.flops,
    }  # fmt: skip


def _stored_score(row) -> Score:
    """A stored sample as the task's `Score`; `details` come back from the merged metadata column."""
    return Score(
        score=row["score"],
        metrics=json.loads(row["metrics"]),
        prediction=row["prediction"] or "",
        details=json.loads(row["metadata"] or "{}"),
    )
