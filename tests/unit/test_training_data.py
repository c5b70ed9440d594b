"""Training data through `datasets`: jsonl, parquet, saved datasets train as .txt books do; test books by content."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import datasets
import pytest
from safetensors.torch import load_file

from harness.cli import main
from harness.core.errors import UserError
from harness.training import TrainSpec, train
from harness.training_data import load_texts
from tasks.data import PG19_TEST_IDS, read_book
from tasks.pg19_fingerprints import FINGERPRINTS, pg19_test_book
from tasks.pg19_fingerprints import main as write_fingerprints

# Two different texts, so that a swap of order or content shows in the losses; CRLF and edge spaces as a file may have.
A = "It was a bright cold day in April, and the clocks were striking thirteen.\r\n" * 40 + "  "
B = "The sky above the port was the color of television, tuned to a dead channel. " * 40
TEXTS = [A.replace("\r\n", "\n").strip(), B.strip()]  # as a book is read: LF line ends, no edge spaces


def records(**extra):
    return {"id": [1, 2], "text": [A, B], **extra}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sources(tmp_path: Path) -> dict[str, tuple[str, dict]]:
    """The same two texts as .txt books, a jsonl, a parquet file and a saved DatasetDict: `--data` and spec fields."""
    books = tmp_path / "books"
    books.mkdir()
    (books / "1_a.txt").write_bytes(A.encode())
    (books / "2_b.txt").write_bytes(B.encode())
    jsonl = write_jsonl(tmp_path / "texts.jsonl", [{"id": 1, "text": A}, {"id": 2, "text": B}])
    parquet = tmp_path / "texts.parquet"
    datasets.Dataset.from_dict({"id": [1, 2], "body": [A, B]}).to_parquet(parquet)
    saved = tmp_path / "saved"
    other = datasets.Dataset.from_dict({"id": [3], "text": ["another text " * 50]})
    datasets.DatasetDict({"train": other, "validation": datasets.Dataset.from_dict(records())}).save_to_disk(saved)
    return {
        "txt": (str(books), {}),
        "jsonl": (str(jsonl), {}),
        "parquet": (str(parquet), {"text_field": "body"}),
        "saved": (str(saved), {"split": "validation"}),
    }


def spec(data: str, out: Path, **fields) -> TrainSpec:
    return TrainSpec(
        method="uio", model="tiny-random-llama", data=data, steps=4, seq_len=64, checkpoint_every=4, out=str(out),
        lr=1e-2, method_options={"segment": 16, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 8},
        train_options={"strategy": "unbiased", "window": 1}, **fields,
    )  # fmt: skip


def test_jsonl_parquet_and_saved_datasets_train_exactly_as_the_same_txt_books(tmp_path):
    runs = {}
    for kind, (data, fields) in sources(tmp_path).items():
        assert [text.text for text in load_texts(data, **fields)] == TEXTS
        losses = [row["loss"] for row in train(spec(data, tmp_path / "out" / kind, **fields), progress=False)]
        adapters = {f.name: load_file(f) for f in sorted((tmp_path / "out" / kind).glob("*.safetensors"))}
        runs[kind] = losses, adapters
    losses, adapters = runs.pop("txt")
    assert len(set(losses)) == len(losses) and adapters  # the losses move and adapters were written
    for kind, (other_losses, other_adapters) in runs.items():
        assert other_losses == losses, kind
        assert other_adapters.keys() == adapters.keys(), kind
        for name, tensors in adapters.items():
            assert all(tensors[key].equal(other_adapters[name][key]) for key in tensors), (kind, name)


def bad(tmp_path: Path, capsys, data: str, *flags: str) -> str:
    """`lch train` on `data` exits with 2 and one line on stderr, before writing anything; that line."""
    argv = ["train", "uio", "--model", "tiny-random-llama", "--data", data, "--steps", "1", "--seq-len", "64",
            "--segment", "16", "--memory-tokens", "4", "--out", str(tmp_path / "o"), *flags]  # fmt: skip
    capsys.readouterr()  # what writing the data printed (datasets' progress bars)
    assert main(argv) == 2
    assert not (tmp_path / "o").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_missing_text_field_names_the_fields_there(tmp_path, capsys):
    data = write_jsonl(tmp_path / "t.jsonl", [{"body": A, "id": 1}])
    expected = f"lch: error: --text-field 'text' is not a field of '{data}'; its fields: body, id"
    assert bad(tmp_path, capsys, str(data)) == expected
    expected = f"lch: error: --text-field 'id' of --data '{data}' is not text but int64"
    assert bad(tmp_path, capsys, str(data), "--text-field", "id") == expected


def test_unknown_path_and_empty_datasets_are_one_line(tmp_path, capsys, monkeypatch):
    nowhere = tmp_path / "nowhere.jsonl"
    assert bad(tmp_path, capsys, str(nowhere)) == f"lch: error: --data '{nowhere}' not found"
    monkeypatch.chdir(tmp_path)  # a relative file name is a path too, not a hub dataset to ask for
    assert bad(tmp_path, capsys, "nowhere.parquet") == "lch: error: --data 'nowhere.parquet' not found"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert bad(tmp_path, capsys, str(empty)) == f"lch: error: --data '{empty}' holds no records"
    rowless = tmp_path / "rows" / "none.parquet"
    rowless.parent.mkdir()
    datasets.Dataset.from_dict({"text": []}).to_parquet(rowless)
    assert bad(tmp_path, capsys, str(rowless.parent)) == f"lch: error: --data '{rowless.parent}' holds no records"


def test_a_folder_mixing_kinds_and_an_unknown_split_are_refused(tmp_path, capsys):
    data = sources(tmp_path)
    write_jsonl(Path(data["txt"][0]) / "more.jsonl", [{"text": A}])
    assert "mixes .txt books and .jsonl/.parquet files" in bad(tmp_path, capsys, data["txt"][0])
    saved = data["saved"][0]
    expected = f"lch: error: --split 'test' is not a split of --data '{saved}'; its splits: train, validation"
    assert bad(tmp_path, capsys, saved, "--split", "test") == expected


def test_a_hub_name_loads_its_split_and_a_failure_is_one_line(tmp_path, monkeypatch, capsys):
    asked = []

    def hub(name, split):
        asked.append((name, split))
        if name == "someone/absent":
            raise ConnectionError("Couldn't reach 'someone/absent' on the Hub (OfflineModeIsEnabled)\nmore detail")
        return datasets.Dataset.from_dict(records())

    monkeypatch.setattr(datasets, "load_dataset", hub)
    assert [text.text for text in load_texts("someone/books", split="validation")] == TEXTS
    expected = "lch: error: --data 'someone/absent' not found here nor on the hub (Couldn't reach 'someone/absent' on "
    assert bad(tmp_path, capsys, "someone/absent") == expected + "the Hub (OfflineModeIsEnabled))"
    assert asked == [("someone/books", "validation"), ("someone/absent", "train")]


@pytest.fixture
def book(shared_data):
    """The shared Gutenberg release of a book, by its id."""
    return lambda book_id: next((shared_data / "books").glob(f"{book_id}_*.txt"))


@pytest.mark.data("books")
def test_a_test_book_in_a_jsonl_is_found_by_content_and_skipped(tmp_path, capsys, book):
    body = read_book(book("10146"))  # the Gutenberg header and footer stripped, as PG19 has it
    rewrapped = textwrap.fill(" ".join(body.split()), width=61)  # other line breaks, as in PG19's own text
    ordinary = read_book(book("1342"))[:200_000]
    data = write_jsonl(tmp_path / "mixed.jsonl", [{"text": rewrapped}, {"text": ordinary}])
    assert [text.text for text in load_texts(str(data))] == [ordinary]
    assert capsys.readouterr().err == f"lch: skipping 1 PG19 test books in {data} (evaluation data)\n"
    assert len(load_texts(str(data), allow_test_data=True)) == 2
    only = write_jsonl(tmp_path / "only.jsonl", [{"text": rewrapped}])
    with pytest.raises(UserError, match="holds only PG19 test books"):
        load_texts(str(only))


@pytest.mark.data("books")
def test_a_renamed_test_book_file_is_found_by_content(tmp_path, book):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(book("10321").read_bytes())  # the Gutenberg release, under another name
    (folder / "mine.txt").write_text(read_book(book("345"))[:100_000])
    assert [Path(text.name).name for text in load_texts(str(folder))] == ["mine.txt"]


@pytest.mark.data("books")
def test_every_test_book_and_half_of_one_are_found_and_no_other_book_is(shared_data, book):
    for path in sorted((shared_data / "books").glob("*.txt")):
        book_id = path.name.split("_")[0]
        assert pg19_test_book(read_book(path)) == (book_id if book_id in PG19_TEST_IDS else None), path.name
    half = read_book(book("22424"))
    assert pg19_test_book(half[len(half) // 2 :]) == "22424"


@pytest.mark.data("books")
def test_committed_fingerprints_are_those_of_the_shared_books(tmp_path, shared_data):
    write_fingerprints([str(shared_data / "books"), "--out", str(tmp_path / "fingerprints.json")])
    assert json.loads((tmp_path / "fingerprints.json").read_text()) == json.loads(FINGERPRINTS.read_text())


def test_unreadable_inputs_are_one_line_with_their_reason(tmp_path, capsys):
    books = tmp_path / "books"
    books.mkdir()
    (books / "ok.txt").write_text(A)
    (books / "shelf.txt").mkdir()  # a folder named like a book is no book
    (books / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    assert bad(tmp_path, capsys, str(books)) == f"lch: error: --data: '{books / 'gone.txt'}' is a link to nothing " \
        f"({tmp_path / 'nowhere.txt'})"  # fmt: skip
    (books / "gone.txt").unlink()
    (books / "ok.txt").chmod(0)
    if os.access(books / "ok.txt", os.R_OK):  # root reads anything
        (books / "ok.txt").chmod(0o644)
    else:
        assert "cannot be read (Permission denied)" in bad(tmp_path, capsys, str(books))
    parquet = tmp_path / "t.parquet"
    parquet.write_bytes(b"PAR1 not really")
    assert "is not a readable parquet file (Parquet magic bytes not found" in bad(tmp_path, capsys, str(parquet))
    jsonl = tmp_path / "j.jsonl"
    jsonl.write_text('{"text": "a"}\n{"text": broken\n')
    assert bad(tmp_path, capsys, str(jsonl)) == f"lch: error: --data '{jsonl}' cannot be read (JSON parse error: " \
        "Invalid value. in row 1)"  # fmt: skip


def test_a_hub_name_without_a_reachable_hub_is_refused_at_once(tmp_path, monkeypatch, capsys):
    import urllib.error
    import urllib.request

    def unreachable(url, timeout):
        assert timeout <= 3
        raise urllib.error.URLError("no route")

    def never(*args, **kwargs):
        raise AssertionError("the hub must not be asked: it would retry for half a minute")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    monkeypatch.setattr(datasets, "load_dataset", never)
    monkeypatch.chdir(tmp_path)
    expected = "lch: error: --data 'books' not found here, and the Hugging Face hub cannot be reached to look"
    assert bad(tmp_path, capsys, "books") == expected
