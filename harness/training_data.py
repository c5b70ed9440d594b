"""Training texts for `lch train`: where they come from, which are refused, and how they are cut into documents.

`--data` is a folder of `.txt` books (or one book); `.jsonl` or `.parquet` files (one, or a folder of
them) whose records hold the text in `--text-field`; a folder written by `datasets`' `save_to_disk`
(a `DatasetDict` gives its `--split`); or, when no such path exists, a hub dataset name and `--split`.
Every text is read as a book is (`tasks.data.read_book`: LF line ends, a Gutenberg header and footer
stripped), so the same text trains the same, token for token, from any of them.

The PG19 test books are evaluation data: they are skipped unless allowed, `.txt` books by file name
and every text by content (`tasks.pg19_fingerprints`), since a record or a hub row has no file name.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch

from harness.errors import UserError
from tasks.data import decode_text, strip_gutenberg, undecodable_share
from tasks.perplexity import PG19_TEST_IDS
from tasks.pg19_fingerprints import pg19_test_book

NOTICEABLE, MOST = 0.01, 0.5  # shares of undecodable bytes in a training book: warn, refuse
TABLE_SUFFIXES = {".jsonl": "json", ".parquet": "parquet"}  # file suffix -> the `datasets` builder that reads it
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


class Text(NamedTuple):
    """One training text and where it came from (a book's path, or `DATA[i]` for the i-th record)."""

    name: str
    text: str


def load_texts(data: str, text_field: str = "text", split: str = "train", allow_test_data: bool = False) -> list[Text]:
    """The texts of `--data`, in a fixed order (books sorted by path, records in order), PG19 test books skipped.

    Raises:
        UserError: `data` is not found, holds nothing to train on, or only PG19 test books (unless allowed);
            a book is not text; `text_field` is not a text field of the records; `split` is not one of theirs.
    """
    books, tables = _files(data)
    if books:
        texts = [_book(path) for path in books]
        named = {str(path) for path in books if path.name.split("_")[0].split(".")[0] in PG19_TEST_IDS}
    else:
        texts, named = _records(_dataset(data, tables, split), data, text_field), set()
    if allow_test_data:
        return texts
    test = {i for i, text in enumerate(texts) if text.name in named or pg19_test_book(text.text) is not None}
    if not test:
        return texts
    if len(test) == len(texts):
        raise UserError(f"--data '{data}' holds only PG19 test books, which are for evaluation (--allow-test-data)")
    print(f"lch: skipping {len(test)} PG19 test books in {data} (evaluation data)", file=sys.stderr)
    return [text for i, text in enumerate(texts) if i not in test]


def _files(data: str) -> tuple[list[Path], list[Path]]:
    """The `.txt` books, or else the `.jsonl`/`.parquet` files, of `data`; both empty for a saved or hub dataset."""
    root = Path(data)
    if not root.exists():
        if not _HUB_NAME.fullmatch(data) or root.suffix in {".txt", *TABLE_SUFFIXES}:  # a path: no need to ask the hub
            raise UserError(f"--data '{data}' not found")
        return [], []
    if root.is_file():
        return ([], [root]) if root.suffix in TABLE_SUFFIXES else ([root], [])
    if (root / "state.json").is_file() or (root / "dataset_dict.json").is_file():  # written by save_to_disk
        return [], []
    books = sorted(root.rglob("*.txt"))
    tables = sorted(path for suffix in TABLE_SUFFIXES for path in root.rglob("*" + suffix))
    if books and tables:
        raise UserError(f"--data '{data}' mixes .txt books and .jsonl/.parquet files: point it at one kind")
    if not books and not tables:
        raise UserError(f"--data '{data}' holds no .txt files (nor .jsonl or .parquet files, nor a saved dataset)")
    if len({path.suffix for path in tables}) > 1:
        raise UserError(f"--data '{data}' mixes .jsonl and .parquet files: point it at one kind")
    return books, tables


def _book(path: Path) -> Text:
    """A `.txt` book read as `tasks.data.read_book` does, refused when it is not text and noted when partly not."""
    raw = path.read_bytes()
    share = undecodable_share(raw)
    if share > MOST:
        raise UserError(f"--data: '{path}' is not text ({share:.0%} of its bytes are undecodable or control bytes)")
    if share > NOTICEABLE:
        print(f"lch: warning: {share:.1%} of the bytes of '{path}' are undecodable or control bytes", file=sys.stderr)
    return Text(str(path), strip_gutenberg(decode_text(raw)))


def _dataset(data: str, tables: list[Path], split: str):
    """The `datasets.Dataset` of `tables`, of the folder `data` written by `save_to_disk`, or of the hub's `data`."""
    import datasets

    if tables:
        tables = [path for path in tables if not _empty(path)]  # `datasets` fails on an empty file, without a reason
        if not tables:
            raise UserError(f"--data '{data}' holds no records")
    with _quiet(datasets), _readable(data):
        if tables:
            files = [str(path) for path in tables]
            # Data files given as a list make one split, which `datasets` names "train"; --split is not theirs.
            return datasets.load_dataset(TABLE_SUFFIXES[tables[0].suffix], data_files=files, split="train")
        if Path(data).exists():
            saved = datasets.load_from_disk(data)
            if not isinstance(saved, datasets.DatasetDict):
                return saved
            if split not in saved:
                raise UserError(f"--split '{split}' is not a split of --data '{data}'; its splits: {', '.join(saved)}")
            return saved[split]
        return datasets.load_dataset(data, split=split)


def _empty(path: Path) -> bool:
    """Whether a `.jsonl`/`.parquet` file holds no record (an empty file, or a parquet file of no rows)."""
    if path.stat().st_size == 0:
        return True
    if path.suffix == ".parquet":
        import pyarrow.parquet

        return pyarrow.parquet.ParquetFile(path).metadata.num_rows == 0
    return False


@contextlib.contextmanager
def _quiet(datasets) -> Iterator[None]:
    """No `datasets` progress bars while loading (training has its own; a one-line error stays one line)."""
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def _readable(data: str) -> Iterator[None]:
    """Turn whatever `datasets` raises for unreadable data (no such hub dataset, bad JSON, offline) into one line."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - ConnectionError, DatasetNotFoundError, ArrowInvalid, ValueError, ...
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        where = "cannot be read" if Path(data).exists() else "not found here nor on the hub"
        raise UserError(f"--data '{data}' {where} ({reason})") from None


def _records(dataset, data: str, text_field: str) -> list[Text]:
    """The `text_field` of each record of `dataset`, read as a book is (a null text is an empty one)."""
    if len(dataset) == 0:
        raise UserError(f"--data '{data}' holds no records")
    fields = dataset.features
    if text_field not in fields:
        raise UserError(f"--text-field '{text_field}' is not a field of '{data}'; its fields: {', '.join(fields)}")
    kind = getattr(fields[text_field], "dtype", type(fields[text_field]).__name__)
    if kind not in ("string", "large_string"):
        raise UserError(f"--text-field '{text_field}' of --data '{data}' is not text but {kind}")
    values = ("" if value is None else value.replace("\r\n", "\n").replace("\r", "\n") for value in dataset[text_field])
    return [Text(f"{data}[{index}]", strip_gutenberg(value)) for index, value in enumerate(values)]


def tokenize(texts: list[Text], tokenizer) -> list[torch.Tensor]:
    """Each text's token ids (no special tokens)."""
    return [torch.tensor(tokenizer(text.text, add_special_tokens=False)["input_ids"]) for text in texts]


class Documents:
    """Non-overlapping `seq_len`-token windows of the texts, in a seeded order reshuffled each epoch.

    Document `i` is a pure function of (texts, tokenizer, seq_len, seed, i), so resuming needs only `i`.
    """

    def __init__(self, texts: list[Text], tokenizer, seq_len: int, seed: int, tokens: list[torch.Tensor] | None = None):
        self.tokens = tokens or tokenize(texts, tokenizer)
        self.windows = [(b, s) for b, ids in enumerate(self.tokens) for s in range(0, len(ids) - seq_len + 1, seq_len)]
        if not self.windows:
            raise UserError(f"no book in the data holds {seq_len} tokens (--seq-len)")
        self.seq_len, self.seed = seq_len, seed
        self._epoch, self._order = -1, []

    def __getitem__(self, index: int) -> torch.Tensor:
        epoch, offset = divmod(index, len(self.windows))
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = torch.randperm(len(self.windows), generator=torch.Generator().manual_seed(self.seed + epoch))
        book, start = self.windows[int(self._order[offset])]
        return self.tokens[book][start : start + self.seq_len]
