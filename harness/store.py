"""SQLite results store: one file with runs, cells and samples, written as each sample finishes.

Schema (query it with pandas or the sqlite3 shell):
  runs(run_id, started, finished, command, git_commit, packages, device, config, host_load, matmul_peak)
  cells(cell_id, run_id, label, model, dtype, device, method, method_config, task, task_version,
        task_config, headline, length, seed, status, error, aggregate, samples, updated)
  samples(cell_id, idx, instance_id, prediction, target, score, metrics, metadata, input_tokens,
          chars, prefill_s, decode_s, decode_tokens, peak_mem_bytes, state_bytes, flops, created,
          prefill_flops, decode_flops)
JSON columns hold configs, metrics and metadata. `status` is one of `STATUSES`. `flops` is
`torch.utils.flop_counter`'s count (`flops: true`); `prefill_flops` and `decode_flops`, always written, are
the model FLOPs lch's kernels report (`methods.flops`). Columns added after a store was written are added
to it when a run starts in it (`LATER_COLUMNS`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.core.errors import UserError

STATUSES = ("running", "done", "failed", "oom", "over_length")
FAILED = ("failed", "oom", "over_length")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started TEXT, finished TEXT, command TEXT,
    git_commit TEXT, packages TEXT, device TEXT, config TEXT, host_load TEXT, matmul_peak TEXT
);
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY, run_id TEXT, label TEXT, model TEXT, dtype TEXT, device TEXT,
    method TEXT, method_config TEXT, task TEXT, task_version INTEGER, task_config TEXT, headline TEXT,
    length INTEGER, seed INTEGER, status TEXT, error TEXT, aggregate TEXT, samples INTEGER, updated TEXT
);
CREATE TABLE IF NOT EXISTS samples (
    cell_id TEXT NOT NULL, idx INTEGER NOT NULL, instance_id TEXT, prediction TEXT, target TEXT,
    score REAL, metrics TEXT, metadata TEXT, input_tokens INTEGER, chars INTEGER,
    prefill_s REAL, decode_s REAL, decode_tokens INTEGER, peak_mem_bytes INTEGER, state_bytes INTEGER,
    flops REAL, created TEXT, prefill_flops REAL, decode_flops REAL,
    PRIMARY KEY (cell_id, idx)
);
"""

TABLES = ("runs", "cells", "samples")

SAMPLE_COLUMNS = (
    "instance_id", "prediction", "target", "score", "metrics", "metadata", "input_tokens", "chars",
    "prefill_s", "decode_s", "decode_tokens", "peak_mem_bytes", "state_bytes", "flops", "prefill_flops", "decode_flops",
)  # fmt: skip
LATER_COLUMNS = {
    "runs": {"host_load": "TEXT", "matmul_peak": "TEXT"},
    "samples": {"prefill_flops": "REAL", "decode_flops": "REAL"},
}


def now() -> str:
    """UTC timestamp in ISO format."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def open_existing(path: str | Path) -> sqlite3.Connection:
    """Open an existing results store to read it (the caller closes it).

    The one check of "is this an lch store" that `lch results`, `lch report` and writers share.

    Raises:
        UserError: `path` is missing, a directory, not an SQLite file, or lacks the lch tables.

    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"results store '{path}' is a directory")
    if not path.is_file():
        raise UserError(f"results store '{path}' not found")
    # Not `?mode=ro`: a read-only connection cannot remove the -wal/-shm files it makes beside a WAL
    # store, so every read would leave two files behind. Reading through a normal connection writes nothing.
    db = sqlite3.connect(path)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:  # random bytes, a text file: "file is not a database"
        db.close()
        raise UserError(f"'{path}' is not an lch results store ({error})") from None
    missing = [table for table in TABLES if table not in tables]
    if missing:  # an empty file opens as an empty database
        db.close()
        raise UserError(f"'{path}' is not an lch results store (no table {', '.join(missing)})")
    return db


class Store:
    """Append-only results store. Each write commits at once, so a killed run loses at most one sample."""

    def __init__(self, path: str | Path):
        """Open the store at `path`, creating it if absent.

        Raises:
            UserError: `path` holds something other than an lch store (which is left untouched), or
                cannot be created or written.

        """
        self.path = Path(path)
        if self.path.is_dir() or (self.path.is_file() and self.path.stat().st_size):
            # Check before writing: the schema below would otherwise be added to someone else's database.
            open_existing(self.path).close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.executescript(SCHEMA)  # a no-op on an existing store: reading it changes no byte
        except (OSError, sqlite3.Error) as error:
            raise UserError(f"cannot write results store '{self.path}': {error}") from None

    def _add_later_columns(self) -> None:
        """Give a store written before them the columns added since (their values stay NULL for old rows)."""
        for table, columns in LATER_COLUMNS.items():
            present = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in present:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def close(self) -> None:
        """Close the connection, back in rollback-journal mode when no one else has the store open.

        WAL mode lets a report read while a sweep writes; left in WAL mode, every later reader would
        make `-wal`/`-shm` files beside a store it only reads.
        """
        if self.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            with contextlib.suppress(sqlite3.OperationalError):  # another connection holds it: it stays WAL
                self.db.execute("PRAGMA journal_mode=DELETE")
        self.db.close()

    def has_runs(self) -> bool:
        """Whether any run was recorded (readable after `close`)."""
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] > 0

    def remove(self) -> None:
        """Delete the store's files (a store made by a command that then failed)."""
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def start_run(self, run_id: str, command: str, provenance: dict[str, Any], config: dict[str, Any]) -> None:
        """Record a run with its provenance and full resolved config; from here on the store is in WAL mode."""
        self.db.execute("PRAGMA journal_mode=WAL")  # a report may read while the run writes
        self._add_later_columns()
        self.db.execute(
            "INSERT INTO runs (run_id, started, finished, command, git_commit, packages, device, config, host_load, "
            "matmul_peak) VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, now(), command, provenance["git_commit"], json.dumps(provenance["packages"]),
             provenance["device"], json.dumps(config), provenance.get("load"),
             json.dumps(provenance["matmul_peak"]) if provenance.get("matmul_peak") else None),
        )  # fmt: skip

    def finish_run(self, run_id: str) -> None:
        """Stamp the run's end time."""
        self.db.execute("UPDATE runs SET finished = ? WHERE run_id = ?", (now(), run_id))

    def cell(self, cell_id: str) -> sqlite3.Row | None:
        """The cell row, or None."""
        return self.db.execute("SELECT * FROM cells WHERE cell_id = ?", (cell_id,)).fetchone()

    def open_cell(self, cell_id: str, run_id: str, fields: dict[str, Any]) -> None:
        """Create the cell (or take it over for this run) with status `running`."""
        columns = ["cell_id", "run_id", *fields, "status", "error", "updated"]
        values = [cell_id, run_id, *(_encode(v) for v in fields.values()), "running", None, now()]
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        self.db.execute(
            f"INSERT INTO cells ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT(cell_id) DO UPDATE SET {updates}",
            values,
        )

    def close_cell(
        self,
        cell_id: str,
        status: str,
        error: str | None = None,
        aggregate: dict | None = None,
        samples: int | None = None,
    ) -> None:
        """Set the cell's final status, error, task-level aggregate and the sample count it was completed for."""
        assert status in STATUSES, status
        self.db.execute(
            "UPDATE cells SET status = ?, error = ?, aggregate = ?, samples = ?, updated = ? WHERE cell_id = ?",
            (status, error, json.dumps(aggregate) if aggregate is not None else None, samples, now(), cell_id),
        )

    def add_sample(self, cell_id: str, idx: int, row: dict[str, Any]) -> None:
        """Insert one finished sample; a duplicate (cell, idx) is ignored, so a rerun never adds rows twice."""
        values = [cell_id, idx, *(_encode(row.get(c)) for c in SAMPLE_COLUMNS), now()]
        self.db.execute(
            f"INSERT OR IGNORE INTO samples (cell_id, idx, {', '.join(SAMPLE_COLUMNS)}, created) "
            f"VALUES ({', '.join('?' * len(values))})",
            values,
        )

    def samples(self, cell_id: str) -> list[sqlite3.Row]:
        """All stored samples of a cell, by index."""
        return self.db.execute("SELECT * FROM samples WHERE cell_id = ? ORDER BY idx", (cell_id,)).fetchall()


def _encode(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value
