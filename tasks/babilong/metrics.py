"""BABILong's scoring (booydar/babilong @ 7a6efee, `babilong/metrics.py`): one answer label, exactly.

The output is lower-cased and cut at its first `.` and at `<context>` or `<example>` (the official cut at
`Question` comes after lower-casing and so never fires; kept as it runs). The labels of the task found in
it as substrings, less those the question names, must be exactly the target: "bathroom or kitchen" is
wrong, and so is an empty answer.
"""

from __future__ import annotations

LABELS = {
    "qa1": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa2": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa3": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa4": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa5": ("Bill", "Fred", "Jeff", "Mary", "apple", "football", "milk"),
}


def first_sentence(output: str) -> str:
    """The lower-cased output up to its first `.`, `<context>` or `<example>` (`preprocess_output`)."""
    text = output.lower().split(".")[0]
    for marker in ("<context>", "<example>", "Question"):
        text = text.split(marker)[0]
    return text


def correct(task: str, target: str, output: str, question: str) -> bool:
    """Whether the labels named in `output`, less the question's, are exactly {`target`} (`compare_answers`)."""
    text, labels = first_sentence(output), {label.lower() for label in LABELS[task]}
    named = {label for label in labels if label in text} - {label for label in labels if label in question.lower()}
    return named == {target.lower()}


def chance(task: str, targets: list[str]) -> float:
    """The accuracy (%) of the best constant answer on `targets`: its most frequent label's share."""
    if not targets:
        return float("nan")
    counts = {label: sum(t.lower() == label.lower() for t in targets) for label in LABELS[task]}
    return 100 * max(counts.values()) / len(targets)
