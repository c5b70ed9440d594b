"""RULER's essay haystack served from the data directory when the network cannot be reached.

lm-eval's RULER tasks with essay haystacks (`ESSAY_TASKS`) download two things when they build their data:
the essays (`datasets.load_dataset("baber/paul_graham_essays")`, whose rows lm-eval joins and splits on
whitespace) and NLTK's English `punkt_tab` sentence model (`nltk.download` at import, then `sent_tokenize`
to place the needles at sentence boundaries). Without a network, and only for what is missing, lch serves:

* the essays from `<data_dir>/haystack/ruler_PaulGrahamEssays.json` (RULER's own haystack, all essays
  concatenated by its `download_paulgraham_essay.py`), written as a cached copy of that dataset (one row) in
  the `datasets` cache, where `load_dataset` finds it offline;
* a Punkt model trained by NLTK's own unsupervised `PunktTrainer` on those essays, in lch's cache
  (`<cache>/nltk_data`), added to NLTK's search path.

Deviation: the official English Punkt parameters (abbreviations, collocations, sentence starters) are a
download; the model trained here splits the essays at nearly but not exactly the same boundaries, so a
needle may sit a sentence away from where lm-eval online puts it. Each RULER sample records what was served
(`Instance.metadata["offline"]`). RULER's QA tasks (SQuAD and HotpotQA dev sets) have no local copy.
"""

from __future__ import annotations

import functools
import json
import socket
from pathlib import Path
from urllib.parse import urlparse

from harness.core.paths import cache_dir
from tasks.data import data_dir as data_dir_of

ESSAY_TASKS = frozenset({"niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multiquery", "niah_multivalue"})
DATASET, NAMESPACE = "paul_graham_essays", "baber"
ESSAYS_FILE = Path("haystack") / "ruler_PaulGrahamEssays.json"
PUNKT = Path("tokenizers") / "punkt_tab" / "english"


def serve(names, data_dir: str | None = None) -> list[str]:
    """Provide what the named lm-eval tasks would download and cannot; return lch's substitutes in use (or [])."""
    if not ESSAY_TASKS.intersection(names):
        return []
    root = data_dir_of(data_dir)
    essays = root / ESSAYS_FILE if root is not None else None
    if essays is None or not essays.is_file() or _hub_reachable():
        return []
    cached = _cached_essays() or [_cache_essays(essays)]
    punkt = _punkt_path() or _train_punkt(essays)
    in_use = []
    if cached == [_essays_dir()]:
        in_use.append(f"essays from {ESSAYS_FILE}")
    if punkt.startswith(str(cache_dir())):
        in_use.append(f"punkt_tab trained on {ESSAYS_FILE}")
    return in_use


@functools.cache  # once a process: every lm-eval cell asks, and an unreachable hub costs the timeout
def _hub_reachable() -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
    except OSError:
        return False
    return True


def _essays_dir() -> Path:
    from datasets import config

    return Path(config.HF_DATASETS_CACHE) / f"{NAMESPACE}___{DATASET}" / "default" / "0.0.0" / "lch-offline"


def _cached_essays() -> list[Path]:
    """Every cached copy of the essays dataset (`load_dataset` offline takes the latest)."""
    from datasets import config

    found = (Path(config.HF_DATASETS_CACHE) / f"{NAMESPACE}___{DATASET}").glob("*/*/*/dataset_info.json")
    return sorted(info.parent for info in found)


def _cache_essays(essays: Path) -> Path:
    """The essays as `datasets`' cache holds a downloaded dataset (an Arrow file per split and its info); its folder."""
    import datasets
    from datasets.arrow_writer import ArrowWriter

    table = datasets.Dataset.from_dict({"text": [json.loads(essays.read_text(encoding="utf-8"))["text"]]})
    target = _essays_dir()
    target.mkdir(parents=True, exist_ok=True)
    with ArrowWriter(path=str(target / f"{DATASET}-train.arrow"), features=table.features) as writer:
        writer.write_table(table.data.table)
        rows, size = writer.finalize()
    split = {"name": "train", "num_bytes": size, "num_examples": rows, "dataset_name": DATASET}
    info = datasets.DatasetInfo(features=table.features, config_name="default", dataset_name=DATASET, splits=[split])
    info.write_to_directory(str(target))  # last: a directory with its info is what the cache lookup takes
    return target


def _punkt_path() -> str | None:
    """NLTK's English Punkt model, looking in lch's cache too."""
    import nltk

    ours = str(cache_dir() / "nltk_data")
    if ours not in nltk.data.path:
        nltk.data.path.append(ours)
    try:
        return str(nltk.data.find(f"{PUNKT.as_posix()}/"))
    except LookupError:
        return None


def _train_punkt(essays: Path) -> str:
    """Train Punkt on the essays into lch's cache; the model's folder."""
    from nltk.tokenize.punkt import PunktTrainer, save_punkt_params

    trainer = PunktTrainer()
    trainer.train(json.loads(essays.read_text(encoding="utf-8"))["text"], finalize=True)
    target = cache_dir() / "nltk_data" / PUNKT
    target.parent.mkdir(parents=True, exist_ok=True)  # NLTK creates the model's own directory, private
    return save_punkt_params(trainer.get_params(), str(target))
