"""Recognise a PG19 test book by its content, wherever it hides: a jsonl record, a hub row, a renamed file.

A text is cut into shingles of `SHINGLE_WORDS` consecutive words, where a word is a run of ASCII
letters and digits, lowercased: so line wrapping, spacing, quote style and `_italics_` do not change
them, and the DeepMind-processed PG19 text (no Gutenberg header) shingles like the Gutenberg release.
A book's fingerprint is its `SIZE` smallest shingle hashes (a bottom-k sample, uniform over its
shingles), computed from the book's body as `tasks.data.read_book` gives it. A text holding at least
`SHARE` of some fingerprint holds, in expectation, that share of the book.

The fingerprints are committed in `pg19_test_fingerprints.json`; regenerate them with
`python -m tasks.pg19_fingerprints ../shared/data/books` (shared/data/SOURCES.md names the seven books).

Shingles are hashed in numpy (a polynomial hash of the shingle's bytes, then splitmix64's finaliser)
rather than with `zlib.crc32` per shingle, which costs about a second per 10 MB in a Python loop.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np

from tasks.data import PG19_TEST_IDS

SHINGLE_WORDS, SIZE, SHARE = 8, 64, 0.25
FINGERPRINTS = Path(__file__).with_name("pg19_test_fingerprints.json")
_WORD_BYTES = b"0123456789abcdefghijklmnopqrstuvwxyz"
# bytes.translate table: A-Z to a-z, other letters and digits kept, every other byte (non-ASCII too) a space.
_TABLE = bytes(c if c in _WORD_BYTES else c + 32 if 65 <= c <= 90 else 32 for c in range(256))
_BASE = np.uint64(0x100000001B3)  # odd, so invertible modulo 2**64
_INVERSE = np.uint64(pow(int(_BASE), -1, 1 << 64))


def _powers(base: np.uint64, n: int) -> np.ndarray:
    """`base**0 .. base**(n-1)` modulo 2**64 (uint64 products wrap)."""
    factors = np.full(n, base, dtype=np.uint64)
    factors[0] = 1
    return np.cumprod(factors)


def shingle_hashes(text: str) -> np.ndarray:
    """The 64-bit hash of every `SHINGLE_WORDS`-word shingle of `text`, in order (empty if it is shorter)."""
    words = text.encode("utf-8").translate(_TABLE).split()
    if len(words) < SHINGLE_WORDS:
        return np.empty(0, dtype=np.uint64)
    joined = np.frombuffer(b" ".join(words), dtype=np.uint8)
    prefix = np.zeros(len(joined) + 1, dtype=np.uint64)
    np.cumsum(joined * _powers(_BASE, len(joined)), out=prefix[1:])
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    ends = np.cumsum(lengths + 1) - 1  # one space after each word but the last
    starts = (ends - lengths)[: len(words) - SHINGLE_WORDS + 1]
    ends = ends[SHINGLE_WORDS - 1 :]
    # The span's hash, shifted back to position 0 so that equal shingles hash equally wherever they are.
    z = (prefix[ends] - prefix[starts]) * _powers(_INVERSE, len(joined))[starts]
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def fingerprint(text: str) -> list[int]:
    """The `SIZE` smallest distinct shingle hashes of `text`, ascending."""
    return [int(h) for h in np.unique(shingle_hashes(text))[:SIZE]]


@functools.cache
def _committed() -> tuple[list[str], np.ndarray, np.ndarray]:
    """The committed fingerprints: book ids, all their hashes sorted, and the book (index) of each hash."""
    books = json.loads(FINGERPRINTS.read_text())["books"]
    ids = list(books)
    hashes = np.array([h for book in ids for h in books[book]], dtype=np.uint64)
    owner = np.repeat(np.arange(len(ids)), [len(books[book]) for book in ids])
    order = np.argsort(hashes)
    return ids, hashes[order], owner[order]


def pg19_test_book(text: str) -> str | None:
    """The id of the PG19 test book `text` holds at least `SHARE` of (by its fingerprint), or None."""
    ids, hashes, owner = _committed()
    shingles = shingle_hashes(text)
    # A binary search per shingle: np.isin would compare every shingle with every fingerprint hash (~50x slower).
    at = np.searchsorted(hashes, shingles).clip(max=len(hashes) - 1)
    found = np.bincount(owner[np.unique(at[hashes[at] == shingles])], minlength=len(ids))
    sizes = np.bincount(owner, minlength=len(ids))
    held = [book for book, hits, size in zip(ids, found, sizes, strict=True) if hits >= SHARE * size]
    return held[0] if held else None


def pg19_test_file(path: str | Path, text: str) -> bool:
    """Whether the book `path`, read as `text`, is a PG19 test book: by its file name's id, or by content.

    The id is the name's part before `_` or `.` (`10146_title.txt`, `10146.txt`); the content catches one
    renamed or inside other text (`pg19_test_book`).
    """
    return Path(path).name.split("_")[0].split(".")[0] in PG19_TEST_IDS or pg19_test_book(text) is not None


def main(argv: list[str] | None = None) -> None:
    """Write the fingerprints of the PG19 test books found in a folder of Gutenberg `.txt` releases."""
    from tasks.data import read_book

    parser = argparse.ArgumentParser(prog="python -m tasks.pg19_fingerprints", description=main.__doc__)
    parser.add_argument("books", help="folder of ID_title.txt books (shared/data/books)")
    parser.add_argument("--out", default=str(FINGERPRINTS), help="JSON file to write (default: the committed one)")
    args = parser.parse_args(argv)
    files = {path.name.split("_")[0]: path for path in Path(args.books).glob("*.txt")}
    missing = [book for book in PG19_TEST_IDS if book not in files]
    if missing:
        parser.error(f"no book {', '.join(missing)} in {args.books}")
    written = {
        "about": f"bottom-{SIZE} hashes of the {SHINGLE_WORDS}-word shingles of each PG19 test book's body "
        "(tasks/pg19_fingerprints.py)",
        "command": "python -m tasks.pg19_fingerprints ../shared/data/books",
        "books": {book: fingerprint(read_book(files[book])) for book in PG19_TEST_IDS},
    }
    Path(args.out).write_text(json.dumps(written, indent=1) + "\n")


if __name__ == "__main__":
    main()
