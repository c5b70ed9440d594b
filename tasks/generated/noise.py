"""Background sentences for generated training sets, from books that are not evaluation data.

A noise source is a `.txt` book or a folder of them (default: the data dir's `books/`), each read
with `tasks.data.read_book` and cut into sentences. Evaluation data is refused: the PG19 test books
(by file name and by content, `tasks.pg19_fingerprints`) are skipped in a folder and an error when
nothing else is left, and any bAbI data (the `babilong` folder, `qa1_..._test.txt`, `*_train.txt`,
`test_100_idxs.json`, or a text in bAbI's numbered-line format) is an error.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from harness.core.errors import UserError
from tasks.data import data_dir, read_book
from tasks.haystack import Book, sentences

# bAbI's names: BABILong's folder and index file, the bAbI release folder, and its task files.
_BABI_NAME = re.compile(r"babilong.*|babi_.*|qa\d+_.*|.*_(test|train|valid)\.txt|test_100_idxs\.json", re.IGNORECASE)
# A bAbI question line: "3 Where is Mary? \tbathroom\t1".
_BABI_QUESTION = re.compile(r"^\d+ [^\t\n]*\?\s*\t[^\t\n]+\t[\d ]+$", re.MULTILINE)


def load_noise(noise: str | None) -> list[Book]:
    """The books of `noise` (default: the data dir's `books/`), sorted by path, PG19 test books skipped.

    Raises:
        UserError: `noise` is not found, holds no `.txt` book, holds bAbI data, or holds only PG19 test books.

    """
    from tasks.pg19_fingerprints import pg19_test_file

    root = Path(noise) if noise else _default()
    if not root.exists():
        raise UserError(f"noise '{root}' not found: give a .txt book or a folder of them")
    files = [root] if root.is_file() else sorted(root.rglob("*.txt"))
    every = [root, *(root.rglob("*") if root.is_dir() else [])]
    named = [path for path in every if _BABI_NAME.fullmatch(path.name)]
    if named:
        raise UserError(f"noise '{root}' is or holds bAbI data ({named[0].name}), which is for evaluation: give books")
    if not files:
        raise UserError(f"noise '{root}' holds no .txt books")
    texts = {path: read_book(path) for path in files}
    babi = [path for path, text in texts.items() if _BABI_QUESTION.search(text[:4096])]
    if babi:
        raise UserError(f"noise '{root}' holds bAbI data ({babi[0].name}, by its content), which is for evaluation")
    test = [path for path, text in texts.items() if pg19_test_file(path, text)]
    if len(test) == len(files):
        raise UserError(f"noise '{root}' holds only PG19 test books, which are for evaluation: give other books")
    if test:
        print(f"lch: skipping {len(test)} PG19 test books in {root} (evaluation data)", file=sys.stderr)
    books = [Book(path.name, sentences(text)) for path, text in texts.items() if path not in test]
    if not any(book.sentences for book in books):
        raise UserError(f"noise '{root}' holds no text")
    return [book for book in books if book.sentences]


def _default() -> Path:
    root = data_dir()
    if root is None:
        raise UserError("no data directory found for the noise books: give noise=FOLDER (a folder of .txt books)")
    return root / "books"
