r"""bAbI qa1-qa3 training records in BABILong's shape: a story's facts scattered through book text.

BABILong (Kuratov et al., 2024, https://arxiv.org/abs/2406.10149) hides bAbI facts among the
sentences of a PG19 book, read from a random start. Here the stories come from lch's own simulator
(`tasks.generated.babi_story`), never from bAbI's files, and the background from `noise` books
(`tasks.generated.noise`, which refuses evaluation data). The facts keep their order and sit between
background sentences at seeded places (never before the first); the background's last sentence is
cut at a token so that the context, facts included, is exactly `length` tokens of the tokenizer.

Prompt: `{context}\nQuestion: {question}\nAnswer:`; answer: ` {place}`. Record (qa2, SmolLM2, seed 0):
    {"prompt": "But I must try to get a few hours' sleep, as Van Helsing is to call for me at noon. Sandra moved
     to the garden. ... Mary travelled to the office. There is no malign there\nQuestion: Where is the milk?
     \nAnswer:", "answer": " office", "task": "qa2", "length": 1024, "facts": ["Sandra moved to the garden.",
     "Mary went back to the garden.", "Sandra picked up the apple there.", ...], "question": "Where is the milk?",
     "book": "345_dracula.txt"}
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

from pydantic import model_validator

from harness.errors import UserError
from tasks.generated import Generator, LengthConfig, register_generator
from tasks.generated.babi_story import BabiTask, make_story
from tasks.generated.noise import load_noise
from tasks.tokens import ids

PROMPT = "{context}\nQuestion: {question}\nAnswer:"
DEFAULT_FACTS = {"qa1": 10, "qa2": 20, "qa3": 30}
MIN_FACTS = {"qa1": 1, "qa2": 2, "qa3": 3}  # a move; a move and a pick-up; and a move while holding
ATTEMPTS, ADJUSTMENTS = 8, 4  # background starts to try; re-cuts of one background to reach the exact length
SLACK = 64  # background tokens read beyond the estimate, for the re-cuts


class BabiDataConfig(LengthConfig):
    """`task`: qa1 (default), qa2 or qa3 (`tasks.generated.babi_story` says what each asks).

    `length`: the context's exact tokens, facts and background, without the question (default 1024),
    or `[min, max]` drawn per record. `facts`: story sentences, supporting and distracting together
    (default: 10 for qa1, 20 for qa2, 30 for qa3). `noise`: a `.txt` book or a folder of them for the
    background (default: the data dir's `books/`; PG19 test books are skipped, bAbI data refused).
    """

    task: BabiTask = "qa1"
    facts: int | None = None
    noise: str | None = None

    @model_validator(mode="after")
    def _check_facts(self) -> BabiDataConfig:
        if self.facts is not None and self.facts < MIN_FACTS[self.task]:
            raise ValueError(f"facts must be at least {MIN_FACTS[self.task]} for {self.task}, got {self.facts}")
        return self

    @property
    def story_facts(self) -> int:
        """The number of facts per story: `facts`, or the task's default."""
        return self.facts or DEFAULT_FACTS[self.task]


@register_generator("babi")
class BabiData(Generator):
    """bAbI-style stories of lch's simulator hidden in book sentences; the answer is " PLACE"."""

    description = "bAbI qa1-qa3 stories (lch's simulator) scattered in book sentences, exact tokens; answer ' PLACE'"
    Config = BabiDataConfig
    needs_tokenizer = True

    def __init__(self, config: BabiDataConfig, tokenizer=None):
        super().__init__(config, tokenizer)
        self.books = load_noise(config.noise)

    @property
    def stream(self) -> str:
        """`babi-{task}`: the same seed gives unrelated stories for qa1, qa2 and qa3."""
        return f"babi-{self.config.task}"

    def record(self, seed: int, index: int) -> dict[str, Any]:
        """A story of `facts` facts in `length` tokens of background, its question and the answer."""
        rng = self.rng(seed, index)
        length = self.config.draw_length(rng)
        story = make_story(rng, self.config.task, self.config.story_facts)
        context, book = self._context(rng, story.facts, length)
        return {
            "prompt": PROMPT.format(context=context, question=story.question),
            "answer": " " + story.answer,
            "task": self.config.task,
            "length": length,
            "facts": story.facts,
            "question": story.question,
            "book": book,
        }

    def _context(self, rng: random.Random, facts: list[str], length: int) -> tuple[str, str]:
        """The facts among background sentences, exactly `length` tokens as text; and the background's book."""
        fact_ids = [ids(self.tokenizer, " " + fact) for fact in facts]
        fact_tokens = sum(map(len, fact_ids))
        if fact_tokens >= length:
            raise UserError(
                f"babi: length {length} leaves no room for background around {len(facts)} facts ({fact_tokens} "
                "tokens): give a longer length or fewer facts"
            )
        shares = sorted(rng.random() for _ in facts)  # each fact's place, as a share of the background sentences
        for _ in range(ATTEMPTS):
            book = rng.randrange(len(self.books))
            background = self._background(book, rng.randrange(len(self.books[book].sentences)), length + SLACK)
            budget = length - fact_tokens
            # Text re-tokenized across the cuts can count other tokens than its pieces (a word cut in two,
            # a character cut in its bytes): re-cut by the difference, or take another start.
            for _ in range(ADJUSTMENTS):
                context = self.tokenizer.decode(
                    _interleave(background, budget, shares, fact_ids), clean_up_tokenization_spaces=False
                )
                counted = len(ids(self.tokenizer, context))
                if counted == length:
                    return context, self.books[book].name
                budget += length - counted
        raise UserError(f"babi: no context of exactly {length} tokens found in {ATTEMPTS} tries with this tokenizer")

    def _background(self, book: int, start: int, tokens: int) -> list[list[int]]:
        """Token ids of the sentences from sentence `start` of `book` on, at least `tokens` of them in all.

        A book that ends first goes on into the next ones (in order, around to the first).
        """
        stream = self._sentences(book, start)
        pieces: list[list[int]] = []
        while sum(map(len, pieces)) < tokens:
            chunk = [" " + sentence for sentence in itertools.islice(stream, 32)]
            if not chunk:
                raise UserError(f"babi: the noise books hold fewer than {tokens} tokens")
            if not pieces:
                chunk[0] = chunk[0][1:]  # the context opens with its first sentence, not a space
            pieces += self.tokenizer(chunk, add_special_tokens=False).input_ids
        return pieces

    def _sentences(self, book: int, start: int) -> Iterator[str]:
        """Every sentence once: `book` from `start`, the books after it, the books before it, `book` up to `start`."""
        order = self.books[book:] + self.books[:book]
        first = order[0].sentences
        return itertools.chain(first[start:], *(other.sentences for other in order[1:]), first[:start])


def _interleave(background: list[list[int]], budget: int, shares: list[float], facts: list[list[int]]) -> list[int]:
    """The first `budget` background tokens, fact `i` after (1-based) sentence `1 + floor(shares[i] * sentences)`.

    A fact never comes before the first sentence; the last may come after the (cut) last sentence.
    """
    kept, total = [], 0
    for sentence in background:
        if total >= budget:
            break
        kept.append(sentence[: budget - total])
        total += len(kept[-1])
    slots = [1 + int(share * len(kept)) for share in shares]
    out: list[int] = []
    for number, sentence in enumerate(kept, 1):
        out += sentence
        for slot, fact in zip(slots, facts, strict=True):
            if slot == number:
                out += fact
    return out
