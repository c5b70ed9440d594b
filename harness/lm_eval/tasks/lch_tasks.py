"""lch's own tasks as lm-eval documents: the YAML files beside this module point their hooks here.

Each `custom_dataset` builds the lch task's instances (the same prompts, needle depths, LongBench
middle truncation and PG19 documents as `lch run`) and writes each one as a document whose `input` is
the decoded prompt; `process_*` score a generation with lch's scoring. lm-eval hands every hook the
run's metadata: `max_seq_lengths` (prompt lengths in tokens, default [4096]), `samples` (documents
per length, default 5), `seed`, the task options below, and the model arguments, from which the
tokenizer is found (`tokenizer`, `pretrained` or `model`: an lch alias, a directory or a hub id).

Differences from lch's own runs: lm-eval sends text, so the prompt is decoded and the adapter encodes
it again (the same ids for the tokenizers tested; a tokenizer that merges across the needle's
boundaries could shift a length by a token); LongBench prompts are cut to the cell length without
lowering it for a method's `max_context`; perplexity is lm-eval's `loglikelihood_rolling` (word and
byte perplexity), which `lm_eval --model lch` computes as lch's `segment` protocol.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import datasets

DEFAULT_LENGTHS = [4096]
DEFAULT_SAMPLES = 5
TOKENIZER_KEYS = ("tokenizer", "pretrained", "model")


@cache
def _tokenizer(name: str):
    from pathlib import Path

    from transformers import AutoTokenizer

    from harness.models import EMBEDDED, TINY, export_dir

    path = export_dir(name) if name in EMBEDDED or name in TINY else Path(name)
    return AutoTokenizer.from_pretrained(str(path) if path.exists() else name)


def _setup(kwargs: dict[str, Any]):
    name = next((kwargs[key] for key in TOKENIZER_KEYS if isinstance(kwargs.get(key), str) and kwargs[key]), None)
    if name is None:
        raise ValueError("lch tasks need a tokenizer: --model_args model=<lch alias or dir> or tokenizer=<dir>")
    lengths = kwargs.get("max_seq_lengths") or DEFAULT_LENGTHS
    return _tokenizer(name), lengths, int(kwargs.get("samples", DEFAULT_SAMPLES)), int(kwargs.get("seed", 0))


def _dataset(rows: list[dict[str, Any]]) -> dict[str, datasets.Dataset]:
    return {"test": datasets.Dataset.from_list(rows)}


def _text(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


def passkey(**kwargs) -> dict[str, datasets.Dataset]:
    """Passkey prompts at every length of `max_seq_lengths` (option `depths`, as lch's passkey)."""
    from tasks.passkey import Passkey

    tokenizer, lengths, samples, seed = _setup(kwargs)
    options = {key: kwargs[key] for key in ("depths",) if key in kwargs}
    task = Passkey(Passkey.Config(**options), tokenizer)
    rows = [
        {"input": _text(tokenizer, i.input_ids), "target": i.target, "length": length, "depth": i.metadata["depth"]}
        for length in lengths
        for i in task.instances(length, samples, seed)
    ]
    return _dataset(rows)


def process_passkey(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Lch's passkey score: 1 if the first integer answered is the key."""
    found = re.search(r"\d+", results[0])
    return {"accuracy": float(found is not None and found.group() == doc["target"])}


def babilong(**kwargs) -> dict[str, datasets.Dataset]:
    """BABILong samples at every length of `max_seq_lengths` (options `tasks`, `subset`, `prompt`, `data_dir`)."""
    from tasks.babilong.task import Babilong

    tokenizer, lengths, samples, seed = _setup(kwargs)
    options = {key: kwargs[key] for key in ("tasks", "subset", "prompt", "data_dir") if key in kwargs}
    task = Babilong(Babilong.Config(**options), tokenizer)
    rows = [
        {"input": _text(tokenizer, i.input_ids), "target": i.target, "length": length, **i.metadata}
        for length in lengths
        for i in task.instances(length, samples, seed)
    ]
    return _dataset(rows)


def process_babilong(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """BABILong's official metric (x100): the answer names exactly the target label."""
    from tasks.babilong.metrics import correct

    return {"accuracy": 100.0 * correct(doc["task"], doc["target"], results[0].strip(), doc["question"])}


def longbench(**kwargs) -> dict[str, datasets.Dataset]:
    """One LongBench v1 dataset (`dataset` from the task's YAML), middle-truncated to each length."""
    from tasks.longbench.task import LongBench

    tokenizer, lengths, samples, _ = _setup(kwargs)
    options = {key: kwargs[key] for key in ("data_dir", "chat_template") if key in kwargs}
    task = LongBench(LongBench.Config(datasets=[kwargs["dataset"]], **options), tokenizer)
    rows = []
    for length in lengths:
        for instance in task.instances(length, samples, 0):
            meta = instance.metadata
            rows.append(
                {
                    "input": _text(tokenizer, instance.input_ids), "dataset": meta["dataset"], "length": length,
                    "answers": meta["answers"], "all_classes": meta["all_classes"] or [],
                }
            )  # fmt: skip
    return _dataset(rows)


def process_longbench(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """The dataset's official metric (x100), with pred.py's samsum first-line rule."""
    from tasks.longbench.metrics import score_prediction

    prediction = results[0].split("\n")[0] if doc["dataset"] == "samsum" else results[0]
    return {"score": 100 * score_prediction(doc["dataset"], prediction, doc["answers"], doc["all_classes"] or None)}


def pg19(**kwargs) -> dict[str, datasets.Dataset]:
    """The PG19 test books (option `data_dir`), each cut to exactly each length in tokens."""
    from tasks.perplexity import Perplexity

    tokenizer, lengths, samples, _ = _setup(kwargs)
    options = {key: kwargs[key] for key in ("data_dir", "documents") if key in kwargs}
    task = Perplexity(Perplexity.Config(**options), tokenizer)
    rows = [
        {
            "text": tokenizer.decode(i.input_ids, skip_special_tokens=True),
            "document": i.metadata["document"],
            "length": length,
        }
        for length in lengths
        for i in task.instances(length, samples, 0)
    ]
    return _dataset(rows)
