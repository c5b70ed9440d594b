"""Finding evaluation data: a local directory first, then (caller's choice) the Hugging Face hub.

The local layout is the one described in `shared/data/SOURCES.md` (`books/`, `longbench/`, ...).
Tasks call `data_dir(option)` and fall back to the hub themselves when it returns None, so each
task keeps its own hub code and this module stays small.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from harness.core.errors import UserError

ENV_VAR = "LCH_DATA_DIR"
PG19_TEST_IDS = ("10146", "10321", "10356", "10762", "15562", "22424", "2544")  # shared/data/SOURCES.md
DEFAULT_RELATIVE = Path("..") / "shared" / "data"

# Project Gutenberg markers. Older releases write "***START OF" without the space and wrap a long
# title onto the next line (books/10146: "...PIONEER DAYS IN\nST. PAUL***"), so a marker runs from
# its opening "***" to the end of the line holding its closing "***", on that line or the next.
_START = re.compile(r"^\*{3} ?START OF[^*\n]*(?:\n[^*\n]*)?\*{3}[^\n]*(?:\n|$)", re.MULTILINE | re.IGNORECASE)
_END = re.compile(r"^\*{3} ?END OF[^*\n]*(?:\n[^*\n]*)?\*{3}[^\n]*(?:\n|$)", re.MULTILINE | re.IGNORECASE)
_START_LINE = re.compile(r"^\*{3} ?START OF[^\n]*(?:\n|$)", re.MULTILINE | re.IGNORECASE)
_END_LINE = re.compile(r"^\*{3} ?END OF[^\n]*(?:\n|$)", re.MULTILINE | re.IGNORECASE)
# The "End of the Project Gutenberg EBook of <title>" line that precedes the END marker in older
# releases is licence boilerplate too; PG19's processed text has neither.
_END_OF_EBOOK = re.compile(r"\n[^\n]*End of (?:the )?Project Gutenberg[^\n]*\s*$", re.IGNORECASE)


def data_dir(option: str | None = None) -> Path | None:
    """Find the local data directory; None means "use the Hugging Face hub".

    Order: `option` (a task's `data_dir`, which must exist), then the `LCH_DATA_DIR` environment
    variable (which must exist when set), then `../shared/data` relative to the current directory
    when it exists.

    Args:
        option: a directory given by the user, or None.

    Returns:
        The resolved directory, or None when no local directory is configured or found.

    Raises:
        UserError: `option` or `LCH_DATA_DIR` names a directory that does not exist.

    """
    if option:
        path = Path(option).expanduser()
        if not path.is_dir():
            raise UserError(f"data_dir '{option}' is not a directory")
        return path.resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise UserError(f"{ENV_VAR}='{env}' is not a directory")
        return path.resolve()
    if DEFAULT_RELATIVE.is_dir():
        return DEFAULT_RELATIVE.resolve()
    return None


def decode_text(raw: bytes) -> str:
    """Decode a text file's bytes to str with LF line ends: UTF-8 (a BOM is dropped) or ASCII.

    Falls back to Latin-1 for the older Gutenberg releases that are ISO-8859-1, so reading never fails.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def undecodable_share(raw: bytes) -> float:
    """Share of bytes that are not text: invalid UTF-8 or control characters other than tab, newline, CR, FF.

    Latin-1 books score a few per mille (their accented letters are invalid UTF-8); random bytes about 0.53.
    """
    if not raw:
        return 0.0
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") + sum(1 for c in text if (ord(c) < 32 and c not in "\t\n\r\f") or 127 <= ord(c) < 160)
    return min(1.0, bad / len(raw))


def strip_gutenberg(text: str) -> str:
    """Keep the body of a Project Gutenberg release: what lies between the START and END marker lines.

    The marker lines themselves go, and so does surrounding blank space. A text without a START
    marker is kept from its beginning, one without an END marker to its end.
    """
    start = _START.search(text) or _START_LINE.search(text)
    if start:
        text = text[start.end() :]
    end = _END.search(text) or _END_LINE.search(text)
    if end:
        text = _END_OF_EBOOK.sub("", text[: end.start()])
    return text.strip()


def read_book(path: str | Path) -> str:
    """Read a Gutenberg book as PG19-like text: decoded, CRLF -> LF, header and licence footer stripped.

    Args:
        path: a `.txt` file (UTF-8 with or without BOM, or ASCII; CRLF or LF).

    Returns:
        The book's body text.

    """
    return strip_gutenberg(decode_text(Path(path).read_bytes()))
