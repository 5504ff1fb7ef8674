"""Per-call capture of ``sys.stdout`` and ``sys.stderr``, capped so a chatty call cannot fill
the results file (and the link): the head and the tail are kept, the middle is elided. One
``capture_output`` serves every call a process runs: its buffers are emptied, not remade."""

from __future__ import annotations

import io
import sys
from typing import Any

CAPTURE_LIMIT = 64 * 1024


class CappedText(io.TextIOBase):
    def __init__(self, limit: int = CAPTURE_LIMIT) -> None:
        self.limit = limit
        self.reset()

    def reset(self) -> None:
        self.head: list[str] = []
        self.head_size = 0
        self.tail = ""
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        size = len(text)
        half = self.limit // 2
        if self.head_size < half:
            take = text[: half - self.head_size]
            self.head.append(take)
            self.head_size += len(take)
            text = text[len(take):]
        if text:
            combined = self.tail + text
            self.dropped += max(0, len(combined) - half)
            self.tail = combined[-half:]
        return size

    def getvalue(self) -> str:
        if not self.head:
            return ""
        head = "".join(self.head)
        if self.dropped:
            return f"{head}\n[... {self.dropped} characters elided by podrun ...]\n{self.tail}"
        return head + self.tail


class capture_output:
    """Swap ``sys.stdout``/``sys.stderr`` for capped buffers for the duration of one call
    (each ``with`` starts them empty)."""

    def __init__(self) -> None:
        self.out, self.err = CappedText(), CappedText()

    def __enter__(self) -> capture_output:
        if self.out.head:
            self.out.reset()
        if self.err.head:
            self.err.reset()
        self.saved: tuple[Any, Any] = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = self.out, self.err
        return self

    def __exit__(self, *exc_info: object) -> None:
        sys.stdout, sys.stderr = self.saved
