"""``podrun.stats()``: what this process has cost the link so far."""

from __future__ import annotations

from ..platform.metered import PROCESS_STATS


def stats() -> dict[str, int]:
    """``{"calls", "polls", "bytes_up", "bytes_down"}`` for this process (polls are in calls too)."""
    return PROCESS_STATS.as_dict()


def reset_stats() -> None:
    PROCESS_STATS.reset()
