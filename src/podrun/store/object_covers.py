"""What a compacted base folded in, so that a writer a compaction caught mid-write learns
whether its write is in the new base (and is acknowledged at the version it wrote) rather than
writing it a second time.

A compaction of an object at version S writes, in the one uplink of its base at S+1, two
files beside it in its generation folder (``wire/layout.py``)::

    <S+1>.<token>.w    empty: "undecided". The compactor deletes it once it has won;
                       when it loses it deletes its base instead.
    <S+1>.<token>.c    the covers record: msgpack {"v": 1, "since": int, "reset": bool,
                       "covers": [[version, token], ...]}

``covers`` names every file whose effect the base holds: the base it was built on and each
patch after it, plus what that base's own record named, when it was a compaction too (a
chain of compactions holds everything since the last plain update). The record is exact for
versions in ``[since, S+1)``: a write there is in the base if and only if it is named. Below
``since`` either a plain update replaced everything (``reset``: nothing older is in the value)
or the record was cut to ``MAX_ENTRIES`` (not known). Bases written before this record existed,
and plain updates, have none: they hold no earlier write.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgpack

from ..errors import IntegrityError

FORMAT = 1
MAX_ENTRIES = 4096  # about 80 KB: a writer caught mid-write while more patches than this are folded is not known


@dataclass(frozen=True)
class Covers:
    since: int
    reset: bool
    entries: frozenset[tuple[int, str]]

    @classmethod
    def after(cls, base_version: int, previous: Covers | None, folded: Iterable[tuple[int, str]]) -> Covers:
        """The record of a compaction of ``folded`` (its base first), over the record of that
        base when it was a compaction (``previous``), cut to the newest ``MAX_ENTRIES``."""
        entries = set(folded) | (previous.entries if previous else set())
        since, reset = (previous.since, previous.reset) if previous else (base_version, True)
        if len(entries) > MAX_ENTRIES:
            entries = set(sorted(entries)[-MAX_ENTRIES:])
            since, reset = min(entries)[0], False
        return cls(since, reset, frozenset(entries))

    def holds(self, version: int, token: str) -> bool | None:
        """Whether the write ``(version, token)`` is in this base; None when not known."""
        if version >= self.since:
            return (version, token) in self.entries
        return False if self.reset else None

    def encode(self) -> bytes:
        return msgpack.packb({"v": FORMAT, "since": self.since, "reset": self.reset,
                              "covers": sorted([v, t] for v, t in self.entries)})

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Covers:
        try:
            body = msgpack.unpackb(bytes(data))
            if body["v"] != FORMAT:
                raise IntegrityError(f"covers record of format {body['v']!r}: this podrun reads format {FORMAT}; "
                                     "upgrade podrun to write this object")
            return cls(int(body["since"]), bool(body["reset"]), frozenset((int(v), str(t)) for v, t in body["covers"]))
        except (ValueError, KeyError, TypeError, msgpack.ExtraData) as exc:
            raise IntegrityError(f"corrupt covers record of a compacted object: {exc}") from exc
