"""Writing a file so that readers see the old version or the new one, never half of either."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write(path: Path, data: bytes | bytearray | memoryview | str) -> None:
    """Write ``data`` to a uniquely named ``.part`` file beside ``path`` and rename it over
    ``path``. Parent folders are made; concurrent writers never share a temporary file, and
    listings skip ``.part`` files (``LocalPlatform.list_files``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "w" if isinstance(data, str) else "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
