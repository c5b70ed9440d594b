from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.errors import UserError
from tasks.data import ENV_VAR, data_dir, read_book

BODY = "THE BOOK\n\nChapter 1.\nIt was a dark night; the *stars* were out.\n\nTHE END."


def _gutenberg(body: str, start: str, end: str) -> str:
    header = "The Project Gutenberg EBook of The Book\n\nRelease Date: 1900\n\n"
    footer = "\n\nEnd of the Project Gutenberg EBook of The Book\n\n" + end + "\n\nLicence text *** more ***\n"
    return header + start + "\n\n\n" + body + footer


def _write(path: Path, text: str, bom: bool = True) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.replace("\n", "\r\n").encode("utf-8"))
    return path


def test_read_book_strips_header_footer_bom_crlf(tmp_path):
    text = _gutenberg(
        BODY + " Caf\u00e9.",
        "*** START OF THIS PROJECT GUTENBERG EBOOK THE BOOK ***",
        "*** END OF THIS PROJECT GUTENBERG EBOOK THE BOOK ***",
    )
    book = read_book(_write(tmp_path / "1_book.txt", text))
    assert book == BODY + " Caf\u00e9."
    assert "\r" not in book and not book.startswith("\ufeff")


def test_read_book_marker_wrapped_onto_next_line(tmp_path):
    # books/10146 writes "***START OF ... PIONEER DAYS IN\nST. PAUL***" (no space, wrapped title).
    text = _gutenberg(
        BODY,
        "***START OF THE PROJECT GUTENBERG EBOOK A VERY LONG TITLE THAT\nWRAPS***",
        "***END OF THE PROJECT GUTENBERG EBOOK A VERY LONG TITLE THAT\nWRAPS***",
    )
    assert read_book(_write(tmp_path / "2_book.txt", text, bom=False)) == BODY


def test_read_book_without_markers_keeps_everything(tmp_path):
    assert read_book(_write(tmp_path / "3.txt", "  line one\nline two\n", bom=False)) == "line one\nline two"


def test_data_dir_option(tmp_path):
    assert data_dir(str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(UserError, match="not a directory"):
        data_dir(str(tmp_path / "missing"))


def test_data_dir_env_then_relative_default_then_none(tmp_path, monkeypatch):
    work = tmp_path / "repo"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert data_dir(None) is None
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    assert data_dir(None) == shared.resolve()
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.setenv(ENV_VAR, str(other))
    assert data_dir(None) == other.resolve()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(UserError, match=ENV_VAR):
        data_dir(None)
