"""Execute a sweep: validate it, skip what the store has, and run the rest here or on Ray (`harness.cells`)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Literal

from harness.cells import Outcome, Recorder, progress_bar, run_cell, stored_scores
from harness.hardware import matmul_peak
from harness.models import load_model
from harness.provenance import provenance
from harness.store import FAILED, Store
from harness.sweep import Cell, SweepSpec, expand
from methods.base import METHODS


def run_sweep(
    spec: SweepSpec,
    retry_failed: bool = False,
    progress: bool = True,
    command: str = "",
    check_methods: bool = False,
    executor: Literal["local", "ray"] = "local",
    address: str | None = None,
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
        executor: `local` runs the cells here one by one; `ray` runs them on a Ray cluster's workers.
        address: the Ray cluster to join (`auto`, `HOST:PORT`); None starts a local one (or joins `$RAY_ADDRESS`).
    """
    run_cells = _run_cells
    if executor == "ray":
        from harness.ray_executor import ray_cells

        run_cells = ray_cells(address)  # without Ray installed, a one-line error before anything is read
    # Validates every name, option, data path and the device before any model is loaded. A Ray driver
    # need not have the workers' GPUs: the workers check the device as they load the model.
    cells = expand(spec, check_device=executor == "local")
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
            outcomes += run_cells(spec, todo, store, progress, command, check_methods)
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
    weights = loaded[0].lm_head.weight
    details = provenance(spec.device) | {"matmul_peak": matmul_peak(weights.device, weights.dtype)}
    store.start_run(run_id, command or " ".join(sys.argv), details, spec.model_dump(mode="json"))
    outcomes = []
    try:
        with progress_bar(todo, progress) as bar:
            recorder = Recorder(store, bar)
            for cell in todo:
                stored = stored_scores(store, cell)
                outcomes.append(run_cell(cell, loaded, recorder, run_id, stored, spec.flops, built.get(cell.label)))
    finally:
        store.finish_run(run_id)
    return outcomes
