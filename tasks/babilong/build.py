"""BABILong records: bAbI's test stories, their official prompts, and the PG19 test books as background.

Source: booydar/babilong @ 7a6efee (`babilong/prompts.py`, `babilong/babilong_utils.py`). The prompt
strings below are data copied byte for byte (quirks such as "question.You" in qa2 included); the unit test
`tests/unit/test_babilong.py` compares them, the template and the metric with the official ones kept in
`tests/golden/babilong/official.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from harness.core.errors import UserError
from tasks.data import PG19_TEST_IDS, data_dir, read_book
from tasks.haystack import Book, sentences

BabilongTask = Literal["qa1", "qa2", "qa3", "qa4", "qa5"]
TASKS: tuple[BabilongTask, ...] = ("qa1", "qa2", "qa3", "qa4", "qa5")
FILES = {
    "qa1": "qa1_single-supporting-fact_test.txt", "qa2": "qa2_two-supporting-facts_test.txt",
    "qa3": "qa3_three-supporting-facts_test.txt", "qa4": "qa4_two-arg-relations_test.txt",
    "qa5": "qa5_three-arg-relations_test.txt",
}  # fmt: skip
FOLDER = "bAbI_tasks_1-20_v1-2_en-10k"  # BABILong reads bAbI's en-10k release; its test files equal en's
SUBSET = "test_100_idxs.json"  # the 100 samples per task of the RMT-team/babilong set, as indices into the 1,000

# `prompts.py`: DEFAULT_TEMPLATE = TASK_TEMPLATE + "\n\n" + USER_TEMPLATE; `get_formatted_input` strips the
# context, formats, and strips the whole.
TEMPLATE = "{instruction}\n\n{examples}\n\n{post_prompt}\n\n<context>\n{context}\n</context>\n\nQuestion: {question}"
PROMPTS = {
    "qa1": {
        "instruction": "I will give you context with the facts about positions of different persons hidden in some random text and a question. You need to answer the question based only on the information from the facts. If a person was in different locations, use the latest location to answer the question.",  # noqa: E501
        "examples": "<example>\nCharlie went to the hallway. Judith come back to the kitchen. Charlie travelled to balcony. Where is Charlie?\nAnswer: The most recent location of Charlie is balcony.\n</example>\n\n<example>\nAlan moved to the garage. Charlie went to the beach. Alan went to the shop. Rouse travelled to balcony. Where is Alan?\nAnswer: The most recent location of Alan is shop.\n</example>",  # noqa: E501
        "post_prompt": "Always return your answer in the following format: The most recent location of ’person’ is ’location’. Do not write anything else after that.",  # noqa: E501
    },
    "qa2": {
        "instruction": "I give you context with the facts about locations and actions of different persons hidden in some random text and a question.You need to answer the question based only on the information from the facts.\nIf a person got an item in the first location and travelled to the second location the item is also in the second location. If a person dropped an item in the first location and moved to the second location the item remains in the first location.",  # noqa: E501
        "examples": "<example>\nCharlie went to the kitchen. Charlie got a bottle. Charlie moved to the balcony. Where is the bottle?\nAnswer: The bottle is in the balcony.\n</example>\n<example>\nAlan moved to the garage. Alan got a screw driver. Alan moved to the kitchen. Where is the screw driver?\nAnswer: The screw driver is in the kitchen.\n</example>",  # noqa: E501
        "post_prompt": "Always return your answer in the following format: The ’item’ is in ’location’. Do not write anything else after that.",  # noqa: E501
    },
    "qa3": {
        "instruction": "I give you context with the facts about locations and actions of different persons hidden in some random text and a question. You need to answer the question based only on the information from the facts.\nIf a person got an item in the first location and travelled to the second location the item is also in the second location. If a person dropped an item in the first location and moved to the second location the item remains in the first location.",  # noqa: E501
        "examples": "<example>\nJohn journeyed to the bedroom. Mary grabbed the apple. Mary went back to the bathroom. Daniel journeyed to the bedroom. Daniel moved to the garden. Mary travelled to the kitchen. Where was the apple before the kitchen?\nAnswer: Before the kitchen the apple was in the bathroom.\n</example>\n<example>\nJohn went back to the bedroom. John went back to the garden. John went back to the kitchen. Sandra took the football. Sandra travelled to the garden. Sandra journeyed to the bedroom. Where was the football before the bedroom?\nAnswer: Before the bedroom the football was in the garden.\n</example>",  # noqa: E501
        "post_prompt": "Always return your answer in the following format: Before the $location_1$ the $item$ was in the $location_2$. Do not write anything else after that.",  # noqa: E501
    },
    "qa4": {
        "instruction": "I will give you context with the facts about different people, their location and actions, hidden in some random text and a question. You need to answer the question based only on the information from the facts.",  # noqa: E501
        "examples": "<example>\nThe hallway is south of the kitchen. The bedroom is north of the kitchen. What is the kitchen south of?\nAnswer: bedroom\n</example>\n<example>\nThe garden is west of the bedroom. The bedroom is west of the kitchen. What is west of the bedroom?\nAnswer: garden\n</example>",  # noqa: E501
        "post_prompt": "Your answer should contain only one word - location. Do not write anything else after that.",
    },
    "qa5": {
        "instruction": "I will give you context with the facts about locations and their relations hidden in some random text and a question. You need to answer the question based only on the information from the facts.",  # noqa: E501
        "examples": "<example>\nMary picked up the apple there. Mary gave the apple to Fred. Mary moved to the bedroom. Bill took the milk there. Who did Mary give the apple to?\nAnswer: Fred\n</example>\n<example>\nJeff took the football there. Jeff passed the football to Fred. Jeff got the milk there. Bill travelled to the bedroom. Who gave the football?\nAnswer: Jeff\n</example>\n<example>\nFred picked up the apple there. Fred handed the apple to Bill. Bill journeyed to the bedroom. Jeff went back to the garden. What did Fred give to Bill?\nAnswer: apple\n</example>",  # noqa: E501
        "post_prompt": "Your answer should contain only one word. Do not write anything else after that. Do not explain your answer.",  # noqa: E501
    },
}


@dataclass(frozen=True)
class Sample:
    """One bAbI question: the story's facts before it (question lines left out), the question, the answer."""

    facts: tuple[str, ...]
    question: str
    answer: str


def render(task: BabilongTask, context: str, question: str, instructed: bool) -> str:
    """The official prompt: with the task's instruction, examples and post-prompt, or (not `instructed`) none."""
    parts = PROMPTS[task] if instructed else {"instruction": "", "examples": "", "post_prompt": ""}
    return TEMPLATE.format(**parts, context=context.strip(), question=question).strip()


def parse_babi(text: str) -> list[Sample]:
    """Every question of a bAbI file as one sample (`get_dataset_df`): a story restarts at line number 1.

    A line is "N text"; a question line is "N question", a tab, the answer, a tab, the supporting ids. The
    question keeps its text up to the tab (bAbI's trailing space included; the prompt's final strip removes it).
    """
    samples, facts = [], []
    for line in text.strip().split("\n"):
        number, _, body = line.partition(" ")
        if int(number) == 1:
            facts = []
        if "\t" in body:
            question, answer = body.split("\t")[:2]
            samples.append(Sample(tuple(facts), question, answer))
        else:
            facts.append(body)
    return samples


def babi_folder(option: str | None) -> Path:
    """The folder holding bAbI's test files and the subset's indices: `<data_dir>/babilong`."""
    root = data_dir(option)
    folder = root / "babilong" if root is not None else None
    if folder is None or not (folder / FOLDER).is_dir():
        raise UserError(
            f"babilong: no {FOLDER} under {folder or 'a data directory'}: give data_dir=DIR holding "
            "babilong/ (see shared/data/SOURCES.md)"
        )
    return folder


@cache
def samples(task: BabilongTask, folder: Path, subset: Literal["test_100", "all"]) -> list[Sample]:
    """The task's test samples in file order, or the 100 of the published subset in its order."""
    path = folder / FOLDER / FILES[task]
    if not path.is_file():
        raise UserError(f"babilong: {path} not found")
    every = parse_babi(path.read_text())
    if subset == "all":
        return every
    indices = json.loads((folder / SUBSET).read_text())[task]
    return [every[index] for index in indices]


@cache
def pg19_test_books(option: str | None) -> list[Book]:
    """The PG19 test books of the data directory (`books/`), sorted by file name, as sentences."""
    root = data_dir(option)
    folder = root / "books" if root is not None else None
    paths = sorted(folder.glob("*.txt")) if folder is not None and folder.is_dir() else []
    chosen = [path for path in paths if path.name.split("_")[0] in PG19_TEST_IDS]
    if not chosen:
        raise UserError(f"babilong: no PG19 test book (ids {', '.join(PG19_TEST_IDS)}) in {folder}")
    return [Book(path.name, sentences(read_book(path))) for path in chosen]
