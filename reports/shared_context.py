"""Shared-context questions in reports: each method's score and cost per question, whole prompts and shared contexts.

A cell ran with questions after a shared context when its samples carry `shared_context` metadata
(`harness.shared_context`); its counterpart is the cell of the same method and length whose task name is
the same without `after` (`passkey:3 keys, after` and `passkey:3 keys`). Costs are per question: the
shared cell's prefill is the question's own plus its share of the context's prefill.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.text import Section, fmt, human


def whole_name(task: str) -> str:
    """The report name of the same task with whole prompts: `passkey:3 keys, after` -> `passkey:3 keys`."""
    name, _, detail = task.partition(":")
    kept = [part for part in detail.replace(", ", ",").split(",") if part and part != "after"]
    separator = ", " if name == "passkey" else ","
    return f"{name}:{separator.join(kept)}" if kept else name


def shared_context(samples: pd.DataFrame) -> pd.DataFrame:
    """Per task (whole-prompt name) x length x method x mode: score, questions a context, costs a question (s)."""
    shared = samples["metadata"].map(lambda m: m.get("shared_context"))
    tasks = set(samples.loc[shared.notna(), "task"])
    if not tasks:
        return pd.DataFrame()
    wanted = samples["task"].isin(tasks | {whole_name(t) for t in tasks})
    rows = []
    for (task, length, method), group in samples[wanted].groupby(["task", "length", "method"], sort=True):
        details = [d for d in shared[group.index] if d]
        copied = all(d.get("copied") for d in details) if details else None
        rows.append(
            {
                "task": whole_name(task), "length": int(length), "method": method,
                "mode": "whole prompt" if task == whole_name(task) else "after a shared context",
                "copied": copied, "n": len(group), "score": group["score"].mean(),
                "questions": np.mean([d["questions"] for d in details]) if copied else 1.0,
                "prefill_s": group["prefill_s"].mean(), "decode_s": group["decode_s"].mean(),
                "context_s": np.mean([d["context_prefill_s"] / d["questions"] for d in details]) if copied else np.nan,
                "question_s": np.mean([d["question_prefill_s"] for d in details]) if copied else np.nan,
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def shared_context_section(frame: pd.DataFrame) -> Section:
    """Each method's score and cost per question, with whole prompts and after a shared context."""
    section = Section("Shared context")
    section.text(
        "After a shared context, the method prefills the context once, without the questions, and answers each "
        "question from a copy of its state after it (SCBench's shared-context mode; kvpress's context/question "
        "split). Prefill per question = the question's own prefill (with the state copy it starts from) + the "
        "context's prefill / the questions sharing it. A method that cannot copy its state ran each prompt whole "
        "(marked 'no copy')."
    )
    for (task, length), group in frame.groupby(["task", "length"], sort=True):
        shown = pd.DataFrame(
            {
                "method": group["method"],
                "mode": [m if c is not False else f"{m} (no copy)" for m, c in zip(group["mode"], group["copied"],
                                                                                  strict=True)],
                "score": group["score"].map(fmt), "questions a context": group["questions"].map(fmt),
                "prefill a question": group["prefill_s"].map(lambda s: human(s, "s")),
                "of which context": group["context_s"].map(lambda s: human(s, "s")),
                "of which question": group["question_s"].map(lambda s: human(s, "s")),
                "decode a question": group["decode_s"].map(lambda s: human(s, "s")),
                "samples": group["n"],
            }
        )  # fmt: skip
        section.table(shown.sort_values(["method", "mode"]), f"{task} at {length:,} tokens: score and cost a question")
    return section
