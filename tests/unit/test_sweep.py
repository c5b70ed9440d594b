"""Sweep specs: validation with one-line errors, cell expansion, stable cell identity (checkpoints by contents)."""

from __future__ import annotations

import shutil

import pytest

from harness.core.errors import UserError
from harness.sweep import expand, load_sweep


def write(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


GOOD = """
model: tiny-random-llama
methods: [{name: full}, {name: streaming, options: {window: 64}}, {name: streaming, options: {window: 32}}]
tasks: [{name: passkey, lengths: [300, 400], options: {depths: [0.5]}}]
"""


def test_expansion_order_labels_and_identity(tmp_path):
    cells = expand(load_sweep(write(tmp_path, GOOD)))
    assert [(c.label, c.length) for c in cells] == [
        ("full", 300), ("streaming(window=64)", 300), ("streaming(window=32)", 300),
        ("full", 400), ("streaming(window=64)", 400), ("streaming(window=32)", 400),
    ]  # fmt: skip
    assert len({c.cell_id for c in cells}) == 6
    again = expand(load_sweep(write(tmp_path, GOOD.replace("model: tiny", "samples: 9\nmodel: tiny"))))
    assert [c.cell_id for c in again] == [c.cell_id for c in cells]  # the sample count is not identity
    other_seed = expand(load_sweep(write(tmp_path, GOOD + "seed: 1\n")))
    assert not {c.cell_id for c in other_seed} & {c.cell_id for c in cells}


def test_a_control_names_another_label_and_stays_out_of_the_cell_id(tmp_path):
    cells = expand(load_sweep(write(tmp_path, GOOD)))
    controlled = GOOD.replace("{name: full}", "{name: full, control: streaming(window=32)}")
    assert [c.cell_id for c in expand(load_sweep(write(tmp_path, controlled)))] == [c.cell_id for c in cells]
    with pytest.raises(UserError, match=r"control 'full' is not another method of the sweep. Valid: streaming\(w"):
        expand(load_sweep(write(tmp_path, GOOD.replace("{name: full}", "{name: full, control: full}"))))


def test_a_task_naming_methods_runs_only_those_and_leaves_the_other_cells_as_they_were(tmp_path):
    limited = GOOD.replace("depths: [0.5]}", "depths: [0.5]}, methods: [full, streaming(window=32)]")
    cells = expand(load_sweep(write(tmp_path, limited)))
    assert [(c.label, c.length) for c in cells] == [
        ("full", 300), ("streaming(window=32)", 300), ("full", 400), ("streaming(window=32)", 400),
    ]  # fmt: skip
    every = {c.label + str(c.length): c.cell_id for c in expand(load_sweep(write(tmp_path, GOOD)))}
    assert all(every[c.label + str(c.length)] == c.cell_id for c in cells)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("methods: [{name: nope}]\ntasks: [{name: passkey, lengths: [10]}]", "'nope'. Valid: full,.*streaming"),
        ("methods: [{name: ful}]\ntasks: [{name: passkey, lengths: [10]}]", "Did you mean 'full'"),
        ("methods: [{name: full}]\ntasks: [{name: pasky, lengths: [10]}]", "unknown task 'pasky'.*passkey"),
        ("methods: [{name: streaming, options: {windw: 3}}]\ntasks: [{name: passkey, lengths: [10]}]",
         "unknown option 'windw'. Valid: n_sink, window, chunk_size"),
        ("methods: [{name: full}]\ntasks: [{name: passkey, lengths: [-5]}]", "lengths.0: Input should be greater"),
        ("methods: [{name: full}]\ntasks: [{name: passkey}]", "task 'passkey' needs lengths"),
        ("methods: [{name: full}]\ntasks: [{name: passkey, lengths: [10]}]\nmodle: x", "unknown option 'modle'"),
        ("methods: [{name: full}\n", "not valid YAML"),
        ("methods: [{name: uio, options: {checkpoint: absent/ckpt}}]\ntasks: [{name: passkey, lengths: [10]}]",
         "method 'uio': checkpoint: UIO checkpoint 'absent/ckpt' does not exist"),
        ("- just a list", "must be a mapping"),
        ("methods: [{name: full}]\ntasks: [{name: passkey, lengths: [10], methods: [streeming]}]",
         r"task 'passkey': methods \['streeming'\] are not in the sweep. Valid: full"),
        ("methods: [{name: full}]\ntasks: [{name: passkey, lenghts: [10]}]",
         "unknown option 'tasks.0.lenghts'. Valid: name, options, lengths, samples, methods"),
        ("methods: [{name: full}, {name: streaming, option: {window: 8}}]\ntasks: [{name: passkey, lengths: [10]}]",
         "unknown option 'methods.1.option'. Valid: name, label, options, control"),
        ("methods: [{name: streaming, label: s1}, {name: streaming, label: s2, options: {window: -5}}]\n"
         "tasks: [{name: passkey, lengths: [10]}]", r"method 's2' \(streaming\): invalid options window=-5"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line(tmp_path, text, message):
    with pytest.raises(UserError, match=message) as error:
        expand(load_sweep(write(tmp_path, text)))
    assert "\n" not in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_sweep(tmp_path / "absent.yaml")


def uio_cell(tmp_path, checkpoint):
    methods = f"methods: [{{name: uio, options: {{checkpoint: '{checkpoint}'}}}}]\n"
    (cell,) = expand(load_sweep(write(tmp_path, methods + "tasks: [{name: passkey, lengths: [300]}]")))
    return cell


def test_checkpoint_contents_not_path_decide_the_cell(tmp_path):
    """Retraining into the same folder makes a new cell; a moved checkpoint resumes the old one."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "encoder_adapter.safetensors").write_bytes(b"weights after 10 steps")
    (folder / "adapters.json").write_text("{}")
    first = uio_cell(tmp_path, folder)
    recorded = first.identity["method_config"]["checkpoint"]
    assert recorded["path"] == str(folder) and len(recorded["sha256"]) == 64
    (folder / "trainer_state.pt").write_bytes(b"optimizer state")  # not what the method loads
    assert uio_cell(tmp_path, folder).cell_id == first.cell_id
    (folder / "encoder_adapter.safetensors").write_bytes(b"weights after 20 steps")
    retrained = uio_cell(tmp_path, folder)
    assert retrained.cell_id != first.cell_id
    moved = uio_cell(tmp_path, shutil.move(folder, tmp_path / "moved"))
    assert moved.cell_id == retrained.cell_id
    assert moved.identity["method_config"]["checkpoint"]["path"] == str(tmp_path / "moved")  # kept for provenance


def test_a_checkpoint_cell_records_its_training_budget_outside_the_cell_id(tmp_path):
    import dataclasses
    import json

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "encoder_adapter.safetensors").write_bytes(b"weights")
    stages = [{"seq_len": 4096, "steps": 40}, {"seq_len": 16384, "steps": 16}]
    spec = {"method": "uio", "data": "books", "stages": stages, "accumulation": 2, "seed": 0}
    (folder / "training.json").write_text(json.dumps(spec))
    cell = uio_cell(tmp_path, folder)
    budget = cell.identity["method_config"]["checkpoint"]["budget"]
    tokens = 2 * (40 * 4096 + 16 * 16384)
    assert budget == {"data": "books", "stages": "4096:40,16384:16", "steps": 56, "tokens": tokens,
                      "longest_document": 16384, "seed": 0}  # fmt: skip
    without_budget = {name: checkpoint | {"budget": {}} for name, checkpoint in cell.checkpoints.items()}
    # stores from before budgets resume
    assert dataclasses.replace(cell, checkpoints=without_budget).cell_id == cell.cell_id
    rows = [{"step": i + 1, "seq_len": 4096 if i < 40 else 16384} for i in range(44)]  # stopped after step 44
    (folder / "train_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    budget = uio_cell(tmp_path, folder).identity["method_config"]["checkpoint"]["budget"]
    assert (budget["steps"], budget["tokens"]) == (44, 2 * (40 * 4096 + 4 * 16384))


def test_a_repeated_method_without_options_keeps_its_name(tmp_path):
    """`full` beside `full` with YaRN: the plain one stays `full`, the default baseline of reports."""
    text = (
        "model: tiny-random-llama\nmethods: [{name: full}, {name: full, options: {rope_scaling: yarn, "
        "rope_factor: auto}}]\ntasks: [{name: passkey, lengths: [300]}]\n"
    )
    assert [c.label for c in expand(load_sweep(write(tmp_path, text)))] == [
        "full",
        "full(rope_factor=auto,rope_scaling=yarn)",
    ]
