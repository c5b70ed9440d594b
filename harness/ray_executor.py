"""`lch run --executor ray`: a sweep's cells on a Ray cluster, every result written by the driver alone.

Workers are a pool of Ray actors, one per slot the cluster has (1 CPU, plus `gpus_per_cell` GPUs). Each
loads the model once, then runs whole cells with `cells.run_cell`, exactly as the local executor does.
Actors rather than tasks with a per-process model cache: an actor holds its GPUs for its whole life (a
task's are released between cells while its process would keep the weights), and a lost worker is one
failed call, not a cache to rebuild somewhere unknown.

A worker's `Sink` puts each of `run_cell`'s calls (open, plan, add_sample, close) on one Ray queue; the
driver applies them in order to the `Recorder` the local executor uses, so samples are stored as they
finish, the SQLite store has one writer and no worker touches a shared file. The driver gives each cell
the samples already stored for it, so resume is the local one (per sample, by index). A cell whose call
raises or whose worker dies is closed as failed with the error, the worker is replaced and the sweep goes
on (a worker lost while idle fails the next cell it is given: `--retry-failed` reruns it). Ctrl-C stops
the workers, stores what already reached the queue and stamps the run's end. The driver takes Ctrl-C as a
flag its loop reads between polls, not as a KeyboardInterrupt raised wherever the main thread happens to
be: one raised inside Ray's blocking calls was lost (a driver interrupted mid-sweep ran on and exited 0).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import uuid
from collections import deque
from functools import partial
from typing import Any

from harness.cells import Outcome, Recorder, cell_fields, error_line, progress_bar, run_cell, stored_scores
from harness.core.errors import UserError
from harness.models import load_model
from harness.provenance import device_name, provenance
from harness.store import Store
from harness.sweep import Cell, SweepSpec

POLL_S = 0.2  # how long the driver waits for a finished cell before it stores the queue's new samples
SINK_CALLS = ("open_cell", "plan", "add_sample", "close_cell")


def ray_cells(address: str | None):
    """The `run_cells` step of `run_sweep` on the Ray cluster at `address` (None: a local Ray instance).

    Raises:
        UserError: Ray is not installed, `address` is neither `auto` nor `HOST:PORT`, or nothing answers there
            within `CONNECT_TIMEOUT_S` (Ray itself would retry for minutes).

    """
    if address is not None and address != "auto":
        check_address(address)
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install -e '.[ray]' in the lch checkout") from None
    return partial(run_cells, address=address)


CONNECT_TIMEOUT_S = 5.0


def check_address(address: str) -> None:
    """A one-line error unless `address` is `HOST:PORT` (a `ray://` client address too) and something listens there."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address '{address}' must be auto or HOST:PORT (the head node's GCS port, e.g. 6379)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__  # a timeout has no strerror
        raise UserError(
            f"no Ray cluster answers at '{address}' ({reason}, after up to {CONNECT_TIMEOUT_S:g} s)"
        ) from None


def run_cells(
    spec: SweepSpec, todo: list[Cell], store: Store, progress: bool, command: str, check_methods: bool, address=None
) -> list[Outcome]:
    """Run the cells `todo` on Ray workers, recording the run in `store` once a worker has loaded the model.

    `check_methods` (building every method before the run, for `lch eval`) is not offered: `lch eval` runs locally.
    """
    import ray
    from ray.util.queue import Queue

    if check_methods:
        raise ValueError("check_methods is for lch eval, which runs locally")
    if spec.device.startswith("cuda") and not spec.gpus_per_cell:
        raise UserError(
            f"device '{spec.device}' on Ray needs gpus_per_cell (e.g. 1) in the sweep: "
            "a Ray worker gets only the GPUs it asks for"
        )
    started = _join(ray, address)
    driver = None
    try:
        slots = _slots(ray, spec.gpus_per_cell)
        # The queue asks for no CPU, or it would hold a slot the workers need.
        driver = _Driver(ray, spec, store, Queue(actor_options={"num_cpus": 0}))
        return driver.run(todo, min(slots, len(todo)), progress, command)
    finally:
        if driver is not None:
            driver.queue.shutdown(force=True)
        if started:
            ray.shutdown()


class _Worker:
    """A Ray actor: loads the model once, then runs the cells it is given, their results going to the queue."""

    def __init__(self, spec: SweepSpec, queue):
        self.spec = spec
        self.queue = queue
        self.loaded = None

    def load(self) -> str:
        """Load the model (a method call, so an error comes back as the error, not as a dead actor); name the device."""
        self.loaded = load_model(self.spec.model, self.spec.dtype, self.spec.device)
        return device_name(self.spec.device)

    def run(self, cell: Cell, run_id: str, stored: dict, flops: bool) -> Outcome:
        """Run one cell; its results stream to the driver through the queue."""
        return run_cell(cell, self.loaded, _QueueSink(self.queue), run_id, stored, flops)


class _QueueSink:
    """A worker's `Sink`: each call goes on the driver's queue as `(name, args, kwargs)`.

    `put` returns once the queue holds the call, so when a cell's call returns, all its results are queued.
    """

    def __init__(self, queue):
        self.queue = queue

    def open_cell(self, *args: Any) -> None:
        self.queue.put(("open_cell", args, {}))

    def plan(self, *args: Any) -> None:
        self.queue.put(("plan", args, {}))

    def add_sample(self, *args: Any) -> None:
        self.queue.put(("add_sample", args, {}))

    def close_cell(self, *args: Any, **kwargs: Any) -> None:
        self.queue.put(("close_cell", args, kwargs))


class _Driver:
    """Hands cells to idle workers and applies their queued results to the store."""

    def __init__(self, ray, spec: SweepSpec, store: Store, queue):
        self.ray = ray
        self.spec = spec
        self.store = store
        self.queue = queue
        self.worker_class = ray.remote(_Worker).options(num_cpus=1, num_gpus=spec.gpus_per_cell)
        self.loading: dict[Any, Any] = {}  # load call -> worker
        self.idle: list[Any] = []
        self.busy: dict[Any, tuple[Any, Cell]] = {}  # run call -> (worker, cell)
        self.inbox: deque = deque()  # results taken from the queue, not yet applied
        self.interrupted = False

    def run(self, todo: list[Cell], workers: int, progress: bool, command: str) -> list[Outcome]:
        """Start `workers` workers, record the run once one has loaded the model, and run `todo`."""
        try:  # the outer `finally` stops the workers when the run is never recorded
            for _ in range(workers):
                self._start_worker()
            # As locally, the model loads before the run is recorded: an unloadable model leaves the store as it was.
            device = self._first_loaded()
            run_id = uuid.uuid4().hex[:12]
            details = provenance("cpu") | {"device": f"ray workers ({workers}): {device}"}
            self.store.start_run(run_id, command or " ".join(sys.argv), details, self.spec.model_dump(mode="json"))
            try:
                with progress_bar(todo, progress) as bar, self._ctrl_c_as_flag():
                    recorder = Recorder(self.store, bar)
                    try:
                        return self._schedule(deque(todo), run_id, recorder)
                    finally:
                        self._stop_workers()  # Ctrl-C or an error: nothing more is computed,
                        with contextlib.suppress(self.ray.exceptions.RayError):  # (Ctrl-C may have stopped Ray too)
                            self._receive()
                        self._apply(recorder)  # and what was finished is stored
            finally:
                self.store.finish_run(run_id)
        finally:
            self._stop_workers()

    def _schedule(self, pending: deque[Cell], run_id: str, recorder: Recorder) -> list[Outcome]:
        outcomes = []
        while pending or self.busy:
            if self.interrupted:
                raise KeyboardInterrupt
            while self.idle and pending:
                worker, cell = self.idle.pop(), pending.popleft()
                call = worker.run.remote(cell, run_id, stored_scores(self.store, cell), self.spec.flops)
                self.busy[call] = (worker, cell)
            if not (self.busy or self.loading):
                raise UserError(f"no Ray worker could load the model; {len(pending)} cells not run (rerun to resume)")
            ready, _ = self.ray.wait([*self.busy, *self.loading], num_returns=1, timeout=POLL_S)
            self._receive()  # after the wait: a finished cell's results are all queued by now
            self._apply(recorder)
            for call in ready:
                if call in self.loading:
                    self._loaded(call, recorder)
                    continue
                worker, cell = self.busy.pop(call)
                try:
                    outcomes.append(self.ray.get(call))
                    self.idle.append(worker)
                except self.ray.exceptions.RayError as error:  # the call raised or the worker died
                    outcomes.append(_lost(recorder, cell, run_id, error))
                    self.ray.kill(worker)  # its state is unknown: a fresh one takes its place
                    self._start_worker()
        return outcomes

    @contextlib.contextmanager
    def _ctrl_c_as_flag(self):
        """While the cells run, Ctrl-C sets `interrupted`; a second one interrupts at once, as usual."""
        if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
            yield
            return

        def interrupt(signum, frame) -> None:
            self.interrupted = True
            signal.signal(signal.SIGINT, previous)

        # None: the handler was set outside Python; Python's own is the one to go back to.
        previous = signal.signal(signal.SIGINT, interrupt) or signal.default_int_handler
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _start_worker(self) -> None:
        worker = self.worker_class.remote(self.spec, self.queue)
        self.loading[worker.load.remote()] = worker

    def _first_loaded(self) -> str:
        """Wait for a worker to load the model; its error (a bad model name, no CUDA on the workers) stops the sweep."""
        ready, _ = self.ray.wait(list(self.loading), num_returns=1)
        worker = self.loading.pop(ready[0])
        try:
            device = self.ray.get(ready[0])
        except self.ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, UserError):
                raise UserError(f"a Ray worker cannot load the model: {error.cause}") from None
            raise
        self.idle.append(worker)
        return device

    def _loaded(self, call, recorder: Recorder) -> None:
        """A worker started after the first has loaded the model, or failed to and is dropped."""
        worker = self.loading.pop(call)
        try:
            self.ray.get(call)
            self.idle.append(worker)
        except self.ray.exceptions.RayError as error:
            first_line = error_line(error).partition("\n")[0]
            recorder.bar.write(f"a Ray worker could not load the model and is left out: {first_line}")
            self.ray.kill(worker)

    def _receive(self) -> None:
        """Move the queued results to `inbox`."""
        size = self.queue.qsize()
        if size:
            self.inbox.extend(self.queue.get_nowait_batch(size))

    def _apply(self, recorder: Recorder) -> None:
        """Apply the received results in order; one that Ctrl-C interrupts stays in `inbox` for the final apply."""
        while self.inbox:
            name, args, kwargs = self.inbox[0]
            assert name in SINK_CALLS, name
            getattr(recorder, name)(*args, **kwargs)
            self.inbox.popleft()

    def _stop_workers(self) -> None:
        for worker in [*self.loading.values(), *self.idle, *(worker for worker, _ in self.busy.values())]:
            self.ray.kill(worker)
        self.loading, self.idle, self.busy = {}, [], {}


def _lost(recorder: Recorder, cell: Cell, run_id: str, error: Exception) -> Outcome:
    """The outcome of a cell whose call raised or whose worker died: failed, unless all its results had arrived."""
    if cell.cell_id in recorder.closed:  # the worker died after the cell's last result
        status, message = recorder.closed[cell.cell_id]
    else:
        status, message = "failed", f"Ray worker lost: {error_line(error)}"
        if cell.cell_id not in recorder.names:  # it died before the cell opened
            recorder.open_cell(cell.cell_id, run_id, cell_fields(cell))
        recorder.close_cell(cell.cell_id, status, error=message)
    return Outcome(cell, status, recorder.added.get(cell.cell_id, 0), message)


def _join(ray, address: str | None) -> bool:
    """Connect to the cluster at `address` (None: start a local one, or join `$RAY_ADDRESS`); True if started here."""
    if ray.is_initialized():  # the caller (a test, a notebook) set Ray up and shuts it down
        return False
    try:
        ray.init(address=address)
    except ConnectionError as error:
        raise UserError(f"cannot join the Ray cluster at '{address}': {str(error).splitlines()[0]}") from None
    return True


def _slots(ray, gpus_per_cell: float) -> int:
    """How many workers the cluster holds at once: 1 CPU each, plus `gpus_per_cell` GPUs."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), resources.get("GPU", 0)
    slots = min(cpus, int(gpus / gpus_per_cell + 1e-9)) if gpus_per_cell else cpus
    if slots < 1:
        raise UserError(
            f"the Ray cluster has {cpus} CPUs and {gpus:g} GPUs; a cell needs 1 CPU and {gpus_per_cell:g} GPUs"
        )
    return slots
