"""What every command group shares: the consoles, tables, the progress bar, expected errors."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from ..client import config
from ..errors import PlatformError, PodrunError
from ..platform.base import Progress as ProgressHook
from ..platform.metered import MeteredPlatform
from ..platform.types import validate_pod_name

PROGRESS_THRESHOLD = 1024 * 1024  # transfers above 1 MB get a progress bar

POD_NAME_HELP = "the pod and its volume (default: your default volume)"


def pod_name_option() -> Any:
    """``--pod-name``/``-p``, the same on every command that addresses a volume or a pod."""
    return typer.Option(None, "--pod-name", "-p", help=POD_NAME_HELP, callback=_check_pod_name)


def _check_pod_name(value: str | None) -> str | None:
    try:
        return validate_pod_name(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def out() -> Console:
    """stdout: tables and results (made per use, so it follows the stream and COLUMNS of now).
    Piped, tables are laid out 200 columns wide, so ids and paths stay whole for grep."""
    console = Console(highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = 200
    return console


def err() -> Console:
    """stderr: progress bars and notes, so that stdout stays clean for pipes."""
    return Console(stderr=True, highlight=False)


def platform() -> MeteredPlatform:
    return config.current_platform()


def human_size(size: int | None) -> str:
    """1536 → '1.5 KiB'."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]], right: Iterable[str] = (),
          whole: Iterable[str] = ("job", "key")) -> Table:
    """A rich table whose cells are plain text (never markup: paths and reprs hold brackets);
    ``right`` columns are right-aligned, ``whole`` ones never wrap (ids to copy)."""
    right, whole = set(right), set(whole)
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, justify="right" if column in right else "left", overflow="fold", no_wrap=column in whole)
    for row in rows:
        grid.add_row(*(cell if isinstance(cell, Text) else Text("" if cell is None else str(cell)) for cell in row))
    return grid


def note(message: str) -> None:
    err().print(Text(message))


@contextmanager
def transfer(label: str, total: int | None) -> Iterator[ProgressHook | None]:
    """A progress bar on stderr for a transfer above 1 MB (the hook the platform calls with
    each chunk's byte count); None, and no bar, for small transfers."""
    if total is None or total <= PROGRESS_THRESHOLD:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err()) as bar:
        task = bar.add_task(label, total=total)
        yield lambda moved: bar.advance(task, moved)


def describe(exc: BaseException) -> str:
    """One clear line (plus a build or load log's tail): the platform's code, then its message."""
    if isinstance(exc, PlatformError):
        return str(exc)  # "[CODE] message", and the log_tail lines when there are any
    if isinstance(exc, PodrunError):
        return f"[{type(exc).__name__}] {exc}"
    if isinstance(exc, OSError) and exc.filename:
        return f"[{type(exc).__name__}] {exc.strerror or exc}: {exc.filename}"
    return f"[{type(exc).__name__}] {exc}"


class PodrunGroup(TyperGroup):
    """The root command group: podrun's expected errors end the command with one line on
    stderr and exit code 1, never a traceback (``PODRUN_DEBUG=1`` shows the traceback)."""

    EXPECTED = (PodrunError, ValueError, OSError)

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context (a private module)
        try:
            return super().invoke(ctx)
        except self.EXPECTED as exc:
            if os.environ.get("PODRUN_DEBUG"):
                raise
            typer.echo(f"error: {describe(exc)}", err=True)
            raise typer.Exit(1) from None
