"""`lch run --executor ray` on a local 2-CPU Ray instance: the local executor's rows, failures confined to
their cell, and a driver killed mid-sweep that a rerun completes without losing or duplicating a sample."""

from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from harness.cli import main
from harness.core.errors import UserError
from harness.runner import run_sweep
from harness.sweep import SweepSpec, load_sweep

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed (the ray extra: pip install -e '.[ray]')"
)


def register_broken_methods():
    """Methods that fail in known ways; run in every Ray worker as it starts, and in the test's process."""
    from methods.base import METHODS
    from methods.baselines.full import Full

    METHODS.names()  # discover the real methods first, as a worker's registry would when asked

    class Raises(Full):
        def prefill(self, input_ids):
            raise RuntimeError("kaboom")

    class Dies(Full):
        """Kills its worker process at its third prefill: after the warm-up and one stored sample."""

        prefills = 0

        def prefill(self, input_ids):
            Dies.prefills += 1
            if Dies.prefills == 3:
                os._exit(1)
            return super().prefill(input_ids)

    METHODS.register("raises")(Raises)
    METHODS.register("dies")(Dies)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance with 2 CPUs whose workers know the broken methods; yields its address."""
    import ray

    # The hook is sent to the workers by value: they cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    context = ray.init(
        num_cpus=2, include_dashboard=False, runtime_env={"worker_process_setup_hook": register_broken_methods}
    )
    yield context.address_info["address"]
    ray.shutdown()


@pytest.fixture
def broken_methods(monkeypatch):
    from methods.base import METHODS

    METHODS.names()
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    register_broken_methods()


def spec(path, methods, lengths=(300, 400), samples=3) -> SweepSpec:
    return SweepSpec(
        model="tiny-random-llama", samples=samples, output=str(path),
        methods=[{"name": m} if isinstance(m, str) else m for m in methods],
        tasks=[{"name": "passkey", "lengths": list(lengths)}],
    )  # fmt: skip


def stored(path) -> tuple[list, list]:
    """The cells and samples of a store, everything but timings, memory peaks and the host's load."""
    with sqlite3.connect(path) as db:
        cells = db.execute(
            "SELECT cell_id, label, length, status, error, aggregate, samples FROM cells ORDER BY cell_id"
        ).fetchall()
        samples = db.execute(
            "SELECT cell_id, idx, instance_id, prediction, target, score, metrics, input_tokens, chars, decode_tokens, "
            "state_bytes, json_remove(metadata, '$.others_cpu_share') FROM samples ORDER BY cell_id, idx"
        ).fetchall()
    return cells, samples


@needs_ray
def test_ray_writes_the_rows_the_local_executor_writes(tmp_path, cluster, one_thread):
    methods = ["full", {"name": "streaming", "options": {"window": 64}}]
    local = run_sweep(spec(tmp_path / "local.sqlite", methods), progress=False)
    on_ray = run_sweep(spec(tmp_path / "ray.sqlite", methods), progress=False, executor="ray")
    assert [(o.cell.cell_id, o.status, o.ran) for o in on_ray] == [(o.cell.cell_id, o.status, o.ran) for o in local]
    assert [o.status for o in on_ray] == ["done"] * 4 and sum(o.ran for o in on_ray) == 12
    assert stored(tmp_path / "ray.sqlite") == stored(tmp_path / "local.sqlite")
    assert sum(o.ran for o in run_sweep(spec(tmp_path / "ray.sqlite", methods), progress=False, executor="ray")) == 0


@needs_ray
def test_a_raising_or_lost_worker_fails_only_its_cell(tmp_path, cluster, broken_methods):
    sweep = spec(tmp_path / "r.sqlite", ["raises", "dies", "full"], lengths=[400], samples=2)
    outcomes = run_sweep(sweep, progress=False, executor="ray")
    assert [(o.cell.label, o.status, o.ran) for o in outcomes] == [("raises", "failed", 0), ("dies", "failed", 1),
                                                                   ("full", "done", 2)]  # fmt: skip
    cells, samples = stored(sweep.output)
    errors = {label: error for _, label, _, _, error, _, _ in cells}
    assert errors["raises"] == "RuntimeError: kaboom"  # as the local executor stores it
    assert errors["dies"].startswith("Ray worker lost: ActorDiedError")
    assert errors["full"] is None
    by_cell = {o.cell.label: o.cell.cell_id for o in outcomes}
    assert [(cell_id, idx) for cell_id, idx, *_ in samples if cell_id == by_cell["dies"]] == [(by_cell["dies"], 0)]


@needs_ray
def test_a_driver_interrupted_then_killed_then_rerun_loses_and_duplicates_nothing(tmp_path, cluster, one_thread):
    sweep = {
        "model": "tiny-random-llama", "samples": 25, "output": str(tmp_path / "k.sqlite"),
        "methods": [{"name": "full"}], "tasks": [{"name": "passkey", "lengths": [1500, 2500]}],
    }  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    command = [sys.executable, "-m", "harness.cli", "run", str(path), "--quiet", "--executor", "ray"]
    command += ["--address", cluster]  # this test's Ray instance: a fresh driver joins it, as on a cluster
    log = tmp_path / "drivers.log"  # what the drivers print, for a failure's report

    def stop_after(samples: int, sig: signal.Signals) -> int:
        """Run the sweep in a new driver, send it `sig` once `samples` samples are stored; its exit status."""
        with log.open("ab") as stderr:
            # The driver runs at low priority: on a loaded machine this loop must see the first samples stored
            # while the sweep is still going, not once it has stored them all.
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                       preexec_fn=lambda: os.nice(10))  # fmt: skip
        deadline = time.time() + 600  # a loaded machine starts Ray workers slowly; a signal before then tests nothing
        while time.time() < deadline and process.poll() is None and count(tmp_path / "k.sqlite") < samples:
            time.sleep(0.05)
        stored_then = count(tmp_path / "k.sqlite")
        os.killpg(process.pid, sig)
        status = process.wait(timeout=120)
        assert samples <= stored_then < 50, f"{stored_then} samples stored when the signal came: {read(log)}"
        return status

    assert stop_after(5, signal.SIGINT) == 130, read(log)  # Ctrl-C: lch's exit status
    interrupted = count(tmp_path / "k.sqlite")
    with sqlite3.connect(tmp_path / "k.sqlite") as db:
        assert db.execute("SELECT count(*) FROM runs WHERE finished IS NULL").fetchone() == (0,)
    assert stop_after(interrupted + 5, signal.SIGKILL) == -signal.SIGKILL
    killed = count(tmp_path / "k.sqlite")
    assert 5 <= interrupted < killed < 50, "each stop must land halfway through the sweep"
    with log.open("ab") as stderr:
        rerun = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=stderr, timeout=300)
    assert rerun.returncode == 0, read(log)
    with sqlite3.connect(tmp_path / "k.sqlite") as db:
        assert db.execute("SELECT count(*), count(DISTINCT cell_id || '/' || idx) FROM samples").fetchone() == (50, 50)
    run_sweep(SweepSpec(**sweep | {"output": str(tmp_path / "local.sqlite")}), progress=False)
    assert stored(tmp_path / "k.sqlite") == stored(tmp_path / "local.sqlite")


def read(path) -> str:
    return path.read_text(errors="replace")[-3000:]


def count(path) -> int:
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT count(*) FROM samples").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or its tables not yet
        return 0


@needs_ray
def test_a_cuda_sweep_on_ray_must_ask_for_gpus(tmp_path):
    with pytest.raises(UserError, match="needs gpus_per_cell"):
        run_sweep(spec(tmp_path / "g.sqlite", ["full"]).model_copy(update={"device": "cuda"}), executor="ray")
    assert not (tmp_path / "g.sqlite").exists()  # checked before Ray starts; the store it made is removed


def test_without_ray_the_executor_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec(tmp_path / "r.sqlite", ["full"]).model_dump(mode="json")))
    assert main(["run", str(path), "--executor", "ray"]) == 2
    expected = "lch: error: --executor ray needs Ray: pip install -e '.[ray]' in the lch checkout\n"
    assert capsys.readouterr().err == expected
    assert main(["run", str(path), "--address", "auto"]) == 2
    assert "--address is the Ray cluster to run on: add --executor ray" in capsys.readouterr().err
    assert not (tmp_path / "r.sqlite").exists()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("gpus_per_cell: 1\n", "gpus_per_cell: 1 GPUs per cell, but the sweep runs on device 'cpu': set device: cuda"),
        ("device: cuda\ngpus_per_cell: 1.5\n", "gpus_per_cell: more than one GPU per cell must be a whole number"),
        ("gpus_per_cell: -1\n", "gpus_per_cell: Input should be greater than or equal to 0"),
    ],
)
def test_gpus_per_cell_is_checked_against_the_device(tmp_path, lines, message):
    path = tmp_path / "s.yaml"
    path.write_text("methods: [{name: full}]\ntasks: [{name: passkey, lengths: [300]}]\n" + lines)
    with pytest.raises(UserError, match=message):
        load_sweep(path)
