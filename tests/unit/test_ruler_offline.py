"""RULER's essay haystack offline: the essays and a Punkt model served from the data directory, only when missing."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("lm_eval")

from tasks import ruler_offline  # noqa: E402


def _essays(sentences: int = 900) -> tuple[str, list[str]]:
    """Sentences of seven made-up words, every third with "Dr. Smith" inside: the abbreviation Punkt must learn."""
    rng = random.Random(0)
    vocabulary = [a + b for a in ("ka", "lo", "mi", "su", "te", "ra", "no", "vi") for b in ("ber", "dan", "fel", "gor")]
    out = []
    for i in range(sentences):
        words = rng.sample(vocabulary, 7)
        if i % 3 == 1:
            words.insert(2, "Dr. Smith")
        out.append(" ".join([words[0].capitalize(), *words[1:]]) + ".")
    return " ".join(out), out


ESSAYS, SENTENCES = _essays()


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """A data directory with RULER's haystack file, and empty `datasets`, lch and NLTK caches."""
    import datasets
    import nltk

    (tmp_path / "data" / "haystack").mkdir(parents=True)
    (tmp_path / "data" / "haystack" / "ruler_PaulGrahamEssays.json").write_text(json.dumps({"text": ESSAYS}))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("LCH_CACHE", str(tmp_path / "lch"))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "no-nltk-data")])
    return tmp_path


def test_essay_tasks_get_the_essays_and_a_sentence_model(offline):
    import datasets
    from nltk import sent_tokenize

    data = str(offline / "data")
    assert ruler_offline.serve(["niah_single_1", "ruler_vt"], data) == []  # no essay haystack: nothing
    assert not (offline / "hf").exists() and not (offline / "lch").exists()
    served = ruler_offline.serve(["niah_single_1", "niah_multikey_1"], data)
    assert served == ["essays from haystack/ruler_PaulGrahamEssays.json",
                      "punkt_tab trained on haystack/ruler_PaulGrahamEssays.json"]  # fmt: skip
    assert datasets.load_dataset("baber/paul_graham_essays", split="train")["text"] == [ESSAYS]
    sentences = sent_tokenize(ESSAYS)
    assert sentences == SENTENCES
    model = next((offline / "lch").rglob("sent_starters.txt"))
    written = model.stat().st_mtime_ns
    assert ruler_offline.serve(["niah_single_2"], data) == served  # what is in use, not retrained
    assert model.stat().st_mtime_ns == written


def test_nothing_is_served_when_the_hub_answers_or_the_file_is_missing(offline, monkeypatch):
    monkeypatch.setattr(ruler_offline, "_hub_reachable", lambda: True)
    assert ruler_offline.serve(["niah_single_2"], str(offline / "data")) == []
    monkeypatch.setattr(ruler_offline, "_hub_reachable", lambda: False)
    (offline / "data" / "haystack" / "ruler_PaulGrahamEssays.json").unlink()
    assert ruler_offline.serve(["niah_single_2"], str(offline / "data")) == []
    assert not (offline / "hf").exists() and not (offline / "lch").exists()


def test_an_essay_task_runs_offline_and_its_samples_say_what_was_served(offline, monkeypatch):
    import sqlite3

    from harness.runner import run_sweep
    from harness.sweep import SweepSpec

    monkeypatch.setenv("LCH_DATA_DIR", str(offline / "data"))
    spec = SweepSpec(
        model="tiny-random-llama", samples=1, output=str(offline / "r.sqlite"), methods=[{"name": "full"}],
        tasks=[{"name": "lm-eval", "lengths": [1024], "options": {"tasks": ["niah_single_2"]}}],
    )  # fmt: skip
    run_sweep(spec, progress=False)
    with sqlite3.connect(offline / "r.sqlite") as db:
        (prediction, metadata), *others = db.execute("SELECT prediction, metadata FROM samples").fetchall()
    assert prediction is not None and not others
    assert json.loads(metadata)["offline"][0] == "essays from haystack/ruler_PaulGrahamEssays.json"
