"""Facts hidden among book sentences, the whole exactly `length` tokens: BABILong's haystack.

BABILong (Kuratov et al., 2024, booydar/babilong `babilong_utils.py`: `SentenceSampler`,
`NoiseInjectionDataset`) reads book sentences from a random place (skipping those under 10 tokens),
cuts the last one to the token budget, and puts each fact at a sentence boundary drawn uniformly with
replacement, the facts in story order. Both the `babilong` task (PG19 test books, bAbI's test stories) and lch's `babi`
training generator (other books, lch's own stories) build their contexts here.

Differences from the official sampler, which counts GPT-2 tokens and decodes them: tokens are the
evaluated tokenizer's, and the decoded context is re-counted and re-cut until it is exactly `length`
tokens (text re-tokenized across a cut can count other tokens than its pieces); sentences are cut
after `.`, `!` or `?` (`sentences`) where the official uses nltk's Punkt; a start is a random
sentence of a random book and a book that ends goes on into the next (official: a random character,
and another random book).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator
from typing import NamedTuple

from harness.core.errors import UserError
from tasks.tokens import ids

# A sentence ends at . ! or ? (perhaps closed by a quote or bracket) followed by white space.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'”’)])\s+")
ATTEMPTS, ADJUSTMENTS = 8, 4  # background starts to try; re-cuts of one background to reach the exact length
SLACK = 64  # background tokens read beyond the estimate, for the re-cuts
MIN_SENTENCE_TOKENS = 10  # shorter background sentences are skipped (official `min_sentence_len`)


class Book(NamedTuple):
    """A background book: its file name and its sentences (white space collapsed to single spaces)."""

    name: str
    sentences: list[str]


def sentences(text: str) -> list[str]:
    """`text` cut into sentences after `.`, `!` or `?`, each with its white space collapsed to single spaces."""
    return [sentence for sentence in _SENTENCE_END.split(" ".join(text.split())) if sentence]


class Haystack:
    """Contexts of facts among the sentences of `books`, exactly a given number of tokens of `tokenizer`.

    Args:
        tokenizer: whose tokens are counted.
        books: the background.
        name: the caller's name, for errors.

    """

    def __init__(self, tokenizer, books: list[Book], name: str):
        self.tokenizer, self.books, self.name = tokenizer, books, name

    def context(self, rng: random.Random, facts: list[str], length: int) -> tuple[str, str]:
        """The facts among background sentences, exactly `length` tokens as text; and the background's book."""
        fact_ids = [ids(self.tokenizer, " " + fact) for fact in facts]
        fact_tokens = sum(map(len, fact_ids))
        if fact_tokens >= length:
            raise UserError(
                f"{self.name}: a context of {length} tokens leaves no room for background around {len(facts)} facts "
                f"({fact_tokens} tokens): give a longer length or fewer facts"
            )
        shares = sorted(rng.random() for _ in facts)  # each fact's place, as a share of the boundaries
        for _ in range(ATTEMPTS):
            book = rng.randrange(len(self.books))
            background = self._background(book, rng.randrange(len(self.books[book].sentences)), length + SLACK)
            budget = length - fact_tokens
            for _ in range(ADJUSTMENTS):
                pieces = self._interleave(background, budget, shares, fact_ids)
                context = self.tokenizer.decode(pieces, clean_up_tokenization_spaces=False).strip()
                counted = len(ids(self.tokenizer, context))
                if counted == length:
                    return context, self.books[book].name
                budget += length - counted
        raise UserError(f"{self.name}: no context of exactly {length} tokens found in {ATTEMPTS} tries")

    def _background(self, book: int, start: int, tokens: int) -> list[list[int]]:
        """Token ids of the sentences from sentence `start` of `book` on, at least `tokens` of them in all.

        A book that ends first goes on into the next ones (in order, around to the first).
        """
        stream = self._sentences(book, start)
        pieces: list[list[int]] = []
        while sum(map(len, pieces)) < tokens:
            chunk = [" " + sentence for sentence in itertools.islice(stream, 32)]
            if not chunk:
                raise UserError(f"{self.name}: the background books hold fewer than {tokens} tokens")
            encoded = self.tokenizer(chunk, add_special_tokens=False).input_ids
            pieces += [piece for piece in encoded if len(piece) >= MIN_SENTENCE_TOKENS]
        return pieces

    def _sentences(self, book: int, start: int) -> Iterator[str]:
        """Every sentence once: `book` from `start`, the books after it, the books before it, `book` up to `start`."""
        order = self.books[book:] + self.books[:book]
        first = order[0].sentences
        return itertools.chain(first[start:], *(other.sentences for other in order[1:]), first[:start])

    def _interleave(
        self, background: list[list[int]], budget: int, shares: list[float], facts: list[list[int]]
    ) -> list[int]:
        """The first `budget` background tokens with fact `i` at boundary `floor(shares[i] * (sentences + 1))`.

        Boundary `b` is after the `b`-th kept sentence: 0 before the first, the last after the (cut) last one.
        """
        kept, total = [], 0
        for sentence in background:
            if total >= budget:
                break
            kept.append(sentence[: budget - total])
            total += len(kept[-1])
        places = [int(share * (len(kept) + 1)) for share in shares]
        out: list[int] = []
        for boundary in range(len(kept) + 1):
            if boundary:
                out += kept[boundary - 1]
            for place, fact in zip(places, facts, strict=True):
                if place == boundary:
                    out += fact
        return out
