"""One line from an exception, for the one-line errors the commands print: its first non-empty
line, cut to a length, or the exception's type where it says nothing (a zero-byte file's error
often has no message at all)."""

from __future__ import annotations


def first_line(e: BaseException, limit: int = 200) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(e).__name__
