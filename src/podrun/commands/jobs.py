"""``podrun jobs ls|show|attach|cancel``: jobs from the local journal, re-attached from here."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import typer
from rich.pretty import pretty_repr

from ..client import attach as attaching
from ..client import config, journal
from ..client.future import wait as wait_futures
from ..client.stop import kill_job
from ..wire import records as rec
from ._common import describe, note, out, table

app = typer.Typer(help="Jobs this machine submitted (the journal): list, inspect, re-attach, cancel.", no_args_is_help=True)


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _outcomes(entry: journal.JournalEntry) -> str:
    return ", ".join(f"{status} {count}" for status, count in sorted(entry.outcomes.items())) or "-"


def _functions(entry: journal.JournalEntry) -> str:
    """``Model.predict ×10, f ×3``: calls of one function sent one by one count as one line."""
    merged: list[list[Any]] = []
    for name, count in entry.groups:
        if merged and merged[-1][0] == name:
            merged[-1][1] += count
        else:
            merged.append([name, count])
    return ", ".join(f"{name} ×{count}" for name, count in merged)


@app.command("ls")
def ls(limit: int = typer.Option(20, "--limit", "-n", help="newest jobs to show")) -> None:
    """List journaled jobs, newest first."""
    entries = journal.entries(config.home(), limit)
    rows = [
        [e.job_id, _when(e.submitted), e.pod_name or "(default)", e.node, _functions(e), e.status, _outcomes(e)]
        for e in entries
    ]
    out().print(table("jobs", ["job", "submitted", "pod", "node", "calls", "status", "outcomes"], rows))
    if not entries:
        note(f"no jobs in the journal at {journal.journal_dir(config.home())}")


@app.command("show")
def show(job_id: str = typer.Argument(..., help="a job id from 'podrun jobs ls'")) -> None:
    """Show one job's journal entry."""
    e = journal.read(config.home(), job_id)
    rows = [["job", e.job_id], ["platform", e.platform], ["pod", e.pod_name or "(default)"], ["node", e.node],
            ["image", e.image], ["max duration", f"{e.max_duration:g} min"], ["submitted", _when(e.submitted)],
            ["calls", f"{e.call_count}: {_functions(e)}"], ["status", e.status], ["outcomes", _outcomes(e)]]
    out().print(table(f"job {e.job_id}", ["field", "value"], rows))


@app.command("attach")
def attach(
    job_id: str = typer.Argument(..., help="a job id from 'podrun jobs ls'"),
    timeout: float = typer.Option(600, "--timeout", help="seconds to wait for the job's calls"),
    max_width: int = typer.Option(200, "--max-width", help="characters of each result's repr to show"),
) -> None:
    """Wait for a job's calls (fetching results already in the volume; nothing re-runs) and
    print each result's repr or its error. Exit code 1 when a call did not succeed."""
    futures = attaching.attach(job_id)
    started = time.monotonic()
    _done, pending = wait_futures(futures, timeout=timeout)
    rows, failed = [], bool(pending)
    for index, future in enumerate(futures):
        if future in pending:
            rows.append([index, future.function_name, "PENDING", f"not finished after {time.monotonic() - started:.0f} s"])
            continue
        try:
            shown = pretty_repr(future.get(timeout=0), max_width=max_width, max_length=20, max_string=max_width)
            status = future.status or rec.OK
        except Exception as exc:  # the call's own outcome: shown, not raised
            failed = True
            shown = describe(exc).splitlines()[0]
            status = future.status or ("CANCELLED" if future.cancelled() else type(exc).__name__)
        rows.append([index, future.function_name, status, shown])
    out().print(table(f"job {job_id}", ["#", "function", "status", "result"], rows, right=["#"]))
    if failed:
        raise typer.Exit(1)


@app.command("cancel")
def cancel(
    job_id: str = typer.Argument(..., help="a job id from 'podrun jobs ls'"),
    call: list[int] = typer.Option([], "--call", help="cancel only this call index; repeatable (default: all)"),
    kill: bool = typer.Option(False, "--kill", help="also stop the job's pod, so running calls end now (KILLED); "
                              "the EM API has no stop route: the pod is replaced by one that exits at once"),
) -> None:
    """Ask the job's pod to skip its calls not yet started (they end CANCELLED); finished
    calls keep their results. One uplink of the job's cancel file. With --kill the pod is
    stopped too ('podrun pods stop' on the job's pod name, while the job is unfinished)."""
    if kill:
        stopped = kill_job(job_id)
        if stopped is None:
            note(f"job {job_id} is done: nothing left to stop ('podrun jobs attach {job_id}' shows its results)")
            return
        if not stopped.was_running:
            note(f"job {job_id} waits in a warm pod's inbox behind other jobs: its calls are cancelled (they end "
                 "CANCELLED) and the pod, which runs others' jobs, keeps running")
            return
        note(f"stopped the pod of job {job_id} ({stopped.pod_name or '(default)'}): its unfinished calls end KILLED; "
             f"'podrun jobs attach {job_id}' shows what ran")
        return
    asked = attaching.cancel(job_id, list(call) or None)
    if not asked:
        note(f"job {job_id} is done: nothing left to cancel ('podrun jobs attach {job_id}' shows its results)")
        return
    note(f"asked the pod of job {job_id} to skip {len(asked)} call(s) not yet started; "
         f"'podrun jobs attach {job_id}' shows what ran")
