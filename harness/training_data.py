"""Training texts for `lch train`: where they come from, which are refused, and how they are cut into documents.

`--data` is a folder of `.txt` books (or one book); `.jsonl` or `.parquet` files (one, or a folder of
them) whose records hold the text in `--text-field`; a folder written by `datasets`' `save_to_disk`
(a `DatasetDict` gives its `--split`); or, when no such path exists, a hub dataset name and `--split`.
Every text is read as a book is (`tasks.data.read_book`: LF line ends, a Gutenberg header and footer
stripped), so the same text trains the same, token for token, from any of them.

The PG19 test books are evaluation data: they are skipped unless allowed, `.txt` books by file name
and every text by content (`tasks.pg19_fingerprints`), since a record or a hub row has no file name.

Texts become documents of a stage's length (`Documents`; a shorter text is one document, whole) or of
lengths drawn from a set (`VaryingDocuments`); records of a prompt and an answer (`--prompt-field`,
`--answer-field`) are documents `prompt + answer + EOS`, each whole (`RecordDocuments`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch

from harness.core.errors import UserError
from tasks.data import decode_text, strip_gutenberg, undecodable_share
from tasks.pg19_fingerprints import pg19_test_book, pg19_test_file

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
    if books and text_field != "text":
        raise UserError(f"--text-field names a field of records; --data '{data}' holds .txt books, read whole")
    _check_split(data, books or tables, split)
    texts = [_book(path) for path in books] if books else _records(_dataset(data, tables, split), data, text_field)
    if allow_test_data:
        return texts
    if books:  # a record has no file name: by content only
        test = {i for i, (path, text) in enumerate(zip(books, texts, strict=True)) if pg19_test_file(path, text.text)}
    else:
        test = {i for i, text in enumerate(texts) if pg19_test_book(text.text) is not None}
    return _without(texts, test, data, f"PG19 test books in {data}")


def _without(items: list, test: set[int], data: str, what: str) -> list:
    """`items` but those at the indices `test` (said on stderr as `what`); nothing left is a one-line error."""
    if not test:
        return items
    if len(test) == len(items):
        raise UserError(f"--data '{data}' holds only PG19 test books, which are for evaluation (--allow-test-data)")
    print(f"lch: skipping {len(test)} {what} (evaluation data)", file=sys.stderr)
    return [item for i, item in enumerate(items) if i not in test]


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
    books = _regular(sorted(root.rglob("*.txt")))
    tables = _regular(sorted(path for suffix in TABLE_SUFFIXES for path in root.rglob("*" + suffix)))
    if books and tables:
        raise UserError(f"--data '{data}' mixes .txt books and .jsonl/.parquet files: point it at one kind")
    if not books and not tables:
        raise UserError(f"--data '{data}' holds no .txt files (nor .jsonl or .parquet files, nor a saved dataset)")
    if len({path.suffix for path in tables}) > 1:
        raise UserError(f"--data '{data}' mixes .jsonl and .parquet files: point it at one kind")
    return books, tables


def _regular(paths: list[Path]) -> list[Path]:
    """The files among `paths` (a folder named `x.txt` is no book); a link to nothing is an error, not a skip."""
    broken = [path for path in paths if path.is_symlink() and not path.exists()]
    if broken:
        raise UserError(f"--data: '{broken[0]}' is a link to nothing ({broken[0].readlink()})")
    return [path for path in paths if path.is_file()]


def _book(path: Path) -> Text:
    """A `.txt` book read as `tasks.data.read_book` does, refused when it is not text and noted when partly not."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UserError(f"--data: '{path}' cannot be read ({error.strerror})") from None
    share = undecodable_share(raw)
    if share > MOST:
        raise UserError(f"--data: '{path}' is not text ({share:.0%} of its bytes are undecodable or control bytes)")
    if share > NOTICEABLE:
        print(f"lch: warning: {share:.1%} of the bytes of '{path}' are undecodable or control bytes", file=sys.stderr)
    return Text(str(path), strip_gutenberg(decode_text(raw)))


def _check_split(data: str, files: list[Path], split: str) -> None:
    """`--split` chooses among a saved or hub dataset's splits; files (books, .jsonl, .parquet) have one."""
    if files and split != "train":
        raise UserError(f"--split picks a split of a saved or hub dataset; --data '{data}' is files, one split")


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
        if _hub_unreachable():
            raise UserError(f"--data '{data}' not found here, and the Hugging Face hub cannot be reached to look")
        return datasets.load_dataset(data, split=split)


def _empty(path: Path) -> bool:
    """Whether a `.jsonl`/`.parquet` file holds no record (an empty file, or a parquet file of no rows)."""
    if path.stat().st_size == 0:
        return True
    if path.suffix == ".parquet":
        import pyarrow
        import pyarrow.parquet

        try:
            return pyarrow.parquet.ParquetFile(path).metadata.num_rows == 0
        except (pyarrow.ArrowException, OSError) as error:
            raise UserError(f"--data: '{path}' is not a readable parquet file ({_first_line(error)})") from None
    return False


@contextlib.contextmanager
def _quiet(datasets) -> Iterator[None]:
    """No `datasets` progress bars or log lines while loading (training has its own; an error stays one line)."""
    shown, verbosity = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its own error line would sit above lch's
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
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
        error = error.__cause__ or error  # "An error occurred while generating the dataset" from: the reason
        where = "cannot be read" if Path(data).exists() else "not found here nor on the hub"
        raise UserError(f"--data '{data}' {where} ({_first_line(error)})") from None


def _hub_unreachable() -> bool:
    """Whether a quick look (3 s) finds no hub, where asking it would spend half a minute in retries.

    Offline mode (`HF_HUB_OFFLINE`) is left to `datasets`, which then answers at once.
    """
    import urllib.error
    import urllib.request

    if os.environ.get("HF_HUB_OFFLINE"):
        return False
    from huggingface_hub import constants

    try:
        urllib.request.urlopen(constants.ENDPOINT, timeout=3).close()
    except urllib.error.HTTPError:
        return False  # it answered
    except OSError:
        return True
    return False


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _records(dataset, data: str, text_field: str) -> list[Text]:
    """The `text_field` of each record of `dataset`, read as a book is (a null text is an empty one)."""
    values = _field(dataset, data, text_field, "--text-field")
    return [Text(f"{data}[{index}]", strip_gutenberg(value)) for index, value in enumerate(values)]


def _field(dataset, data: str, field: str, flag: str) -> list[str]:
    """The text of `field` in each record, LF line ends (a null is empty); a missing or non-text field is refused."""
    if len(dataset) == 0:
        raise UserError(f"--data '{data}' holds no records")
    fields = dataset.features
    if field not in fields:
        raise UserError(f"{flag} '{field}' is not a field of '{data}'; its fields: {', '.join(fields)}")
    kind = getattr(fields[field], "dtype", type(fields[field]).__name__)
    if kind not in ("string", "large_string"):
        raise UserError(f"{flag} '{field}' of --data '{data}' is not text but {kind}")
    return ["" if value is None else value.replace("\r\n", "\n").replace("\r", "\n") for value in dataset[field]]


class Record(NamedTuple):
    """One task-shaped training record: a prompt and its answer (`DATA[i]` names the i-th)."""

    name: str
    prompt: str
    answer: str


def load_records(
    data: str, prompt_field: str, answer_field: str, split: str = "train", allow_test_data: bool = False
) -> list[Record]:
    """The prompt and answer of each record of `--data` (jsonl/parquet, saved or hub dataset), in order.

    A record whose prompt holds a PG19 test book (by content) is skipped unless allowed, as texts are.

    Raises:
        UserError: `data` holds no records, or a field is missing or not text.
    """
    books, tables = _files(data)
    if books:
        raise UserError(f"--data '{data}' holds .txt books: --prompt-field and --answer-field need records")
    _check_split(data, tables, split)
    dataset = _dataset(data, tables, split)
    prompts = _field(dataset, data, prompt_field, "--prompt-field")
    answers = _field(dataset, data, answer_field, "--answer-field")
    pairs = enumerate(zip(prompts, answers, strict=True))
    records = [Record(f"{data}[{i}]", prompt, answer) for i, (prompt, answer) in pairs]
    if allow_test_data:
        return records
    test = {i for i, record in enumerate(records) if pg19_test_book(record.prompt) is not None}
    return _without(records, test, data, "records holding PG19 test books")


def tokenize(texts: list[Text], tokenizer) -> list[torch.Tensor]:
    """Each text's token ids (no special tokens)."""
    return [torch.tensor(tokenizer(text.text, add_special_tokens=False)["input_ids"]) for text in texts]


class Example(NamedTuple):
    """One training document: its token ids and, for a prompt/answer record, where the answer starts."""

    ids: torch.Tensor
    answer: int | None = None  # index of the first answer token; the answer (and EOS) runs to the end


class Documents:
    """Non-overlapping `seq_len`-token windows of the texts, in a seeded order reshuffled each epoch.

    A text shorter than `seq_len` is one document, whole; a longer one gives its windows (the rest after
    the last whole window is not trained on). Document `i` is a pure function of (texts, tokenizer,
    seq_len, seed, i), so resuming needs only `i`.
    """

    def __init__(self, texts: list[Text], tokenizer, seq_len: int, seed: int, tokens: list[torch.Tensor] | None = None):
        self.tokens = tokens or tokenize(texts, tokenizer)
        self.windows = [
            (b, s, min(seq_len, len(ids)))
            for b, ids in enumerate(self.tokens)
            for s in range(0, max(1, len(ids) - seq_len + 1), seq_len)
            if len(ids) >= 2
        ]
        if not self.windows:
            raise UserError("no text in the data holds 2 tokens")
        self.order = EpochOrder(len(self.windows), seed)

    def __getitem__(self, index: int) -> Example:
        book, start, length = self.windows[self.order[index]]
        return Example(self.tokens[book][start : start + length])


class VaryingDocuments:
    """Documents whose length is drawn from a set, one draw per document (BABILong's `--vary_n_segments`).

    Document `i` has length `lengths[k]`, k drawn from a generator seeded by (seed, i), and is document `i` of
    that length's `Documents`: a pure function of `i`, so resuming needs only `i`.
    """

    def __init__(self, texts: list[Text], tokenizer, lengths: list[int], seed: int, tokens: list[torch.Tensor]):
        self.lengths, self.seed = lengths, seed
        self.by_length = {length: Documents(texts, tokenizer, length, seed, tokens) for length in lengths}

    def __getitem__(self, index: int) -> Example:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        length = self.lengths[int(torch.randint(len(self.lengths), (1,), generator=generator))]
        return self.by_length[length][index]


class RecordDocuments:
    """Prompt/answer records as documents `prompt + answer + EOS`, each whole, in a seeded order reshuffled each epoch.

    A record longer than `max_len` tokens is left out (a curriculum's short stage takes the short records of
    a set of mixed lengths); none fitting is an error. Prompt and answer are tokenized apart, so the answer's
    first token is where the answer begins.
    """

    def __init__(
        self, records: list[Record], tokenizer, max_len: int, seed: int, examples: list[Example] | None = None
    ):
        every = examples or record_examples(records, tokenizer)
        self.examples = [example for example in every if example.ids.numel() <= max_len]
        if not self.examples:
            raise UserError(f"no record fits in {max_len} tokens (prompt + answer + EOS); raise the stage's length")
        self.left_out = len(records) - len(self.examples)
        self.order = EpochOrder(len(self.examples), seed)

    def __getitem__(self, index: int) -> Example:
        return self.examples[self.order[index]]


def record_examples(records: list[Record], tokenizer) -> list[Example]:
    """Each record's ids `prompt + answer + EOS` and where its answer starts (a stage's records are some of them)."""
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    examples = []
    for record in records:
        prompt = tokenizer(record.prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(record.answer, add_special_tokens=False)["input_ids"] + eos
        if not prompt or not answer:
            raise UserError(f"record {record.name} has an empty prompt or answer")
        examples.append(Example(torch.tensor(prompt + answer), len(prompt)))
    return examples


class EpochOrder:
    """Which of `size` items the `index`-th draw takes: a permutation seeded by `seed + epoch`, one per epoch."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self._epoch, self._order = -1, torch.arange(0)

    def __getitem__(self, index: int) -> int:
        epoch, offset = divmod(index, self.size)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
        return int(self._order[offset])
