"""Content hashes: every blob, callable and bundle is named by the SHA-256 of its bytes.

SHA-256 because OpenSSL accelerates it on both x86-64 (SHA-NI) and ARMv8 (crypto extensions),
so hashing a large argument costs about as much as copying it.
"""

from __future__ import annotations

import hashlib
import re

_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


def content_hash(*parts: bytes | bytearray | memoryview) -> str:
    """Hex SHA-256 of the concatenation of ``parts``."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def is_content_hash(value: str) -> bool:
    """True for a well-formed hash name (used to refuse hostile blob names)."""
    return bool(_HASH_RE.match(value))
