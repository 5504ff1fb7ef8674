"""A module of the user's project that a remote function imports: it travels by source
(client/modules.py), so its frames in a remote traceback must name this file."""

from __future__ import annotations


def check_reading(value: float) -> float:
    if value < 0:
        raise ValueError(f"negative reading {value}")
    return value
