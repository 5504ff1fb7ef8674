"""``podrun volumes ls|rm`` through the platform's pvc routes, and ``podrun files ls`` footers
that count what the table shows; on the local platform and through the emulator."""

from __future__ import annotations

import time

from typer.testing import CliRunner

from podrun.cli import app
from podrun.client import config

from .test_cli import context, podrun_cli  # noqa: F401 - the fixture, shared with the CLI suite


def _put(tmp_path, c, pod_name: str | None, **files: bytes) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    flags = ["-p", pod_name] if pod_name else []
    podrun_cli(*c, "files", "put", *(str(tmp_path / name) for name in files), *flags)


def _volume_row(listing: str, name: str) -> list[str]:
    """The cells of the table row whose first cell is ``name``."""
    rows = ([cell.strip() for cell in line.strip("│ ").split("│")] for line in listing.splitlines())
    return next(row for row in rows if row[0] == name)


def test_volumes_ls_lists_every_volume_with_its_pod_name_and_footprint(context, tmp_path):  # noqa: F811 - the fixture imported above
    c = ("--context", context)
    _put(tmp_path, c, "vol-a", **{"one.bin": b"1" * 100, "two.bin": b"2" * 50})
    _put(tmp_path, c, None, **{"home.txt": b"hello"})
    config.configure(context=context)
    default = config.current_platform().default_volume()
    shown = podrun_cli(*c, "volumes", "ls")
    assert _volume_row(shown.stdout, "vol-a")[1:] == ["vol-a", "-", "2", "150 B"]
    assert _volume_row(shown.stdout, default)[1:] == ["(default)", "-", "1", "5 B"]
    assert "2 volumes, 3 files, 155 B" in shown.stderr
    bare = podrun_cli(*c, "volumes", "ls", "--no-sizes")
    assert _volume_row(bare.stdout, "vol-a")[1:] == ["vol-a", "-"] and bare.stderr.strip() == "2 volumes"


def test_volumes_rm_asks_first_and_deletes_only_that_volume(context, tmp_path):  # noqa: F811 - the fixture imported above
    c = ("--context", context)
    _put(tmp_path, c, "vol-b", **{"b.txt": b"b"})
    _put(tmp_path, c, "vol-keep", **{"k.txt": b"k"})
    declined = CliRunner().invoke(app, [*c, "volumes", "rm", "vol-b"], input="n\n")
    assert declined.exit_code == 1 and "nothing deleted" in declined.stderr
    unanswered = podrun_cli(*c, "volumes", "rm", "vol-b", ok=False)  # no terminal, no answer: aborted
    assert unanswered.exit_code == 1
    assert "vol-b" in podrun_cli(*c, "volumes", "ls").stdout
    confirmed = CliRunner().invoke(app, [*c, "volumes", "rm", "vol-b"], input="y\n")
    assert confirmed.exit_code == 0 and "deleted volume vol-b" in confirmed.stderr
    listing = podrun_cli(*c, "volumes", "ls").stdout
    assert "vol-b" not in listing and "vol-keep" in listing
    again = podrun_cli(*c, "volumes", "rm", "vol-b", "--yes", ok=False)
    assert again.exit_code == 1 and "no volume named 'vol-b'" in again.stderr
    bad = podrun_cli(*c, "volumes", "rm", "Not_A_Volume", "--yes", ok=False)
    assert bad.exit_code == 1 and "no volume named 'Not_A_Volume'" in bad.stderr


def test_volumes_rm_refuses_while_its_pod_runs(context, tmp_path):  # noqa: F811 - the fixture imported above
    c = ("--context", context)
    podrun_cli(*c, "pods", "run", "python:3.11-slim", "-p", "vol-busy", "-m", "1", "--command", "/bin/sh",
               "--arg", "-c", "--arg", "sleep 20")
    config.configure(context=context)
    platform = config.current_platform()
    deadline = time.monotonic() + 60
    while platform.pod_status("vol-busy").phase != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    refused = podrun_cli(*c, "volumes", "rm", "vol-busy", "--yes", ok=False)
    assert refused.exit_code == 1 and "its pod is running" in refused.stderr
    assert "vol-busy" in platform.pvc_list()


def test_files_ls_footer_counts_what_it_shows(context, tmp_path):  # noqa: F811 - the fixture imported above
    c = ("--context", context)
    _put(tmp_path, c, "vol-foot", **{"seen.txt": b"12345", ".hidden": b"123"})
    shown = podrun_cli(*c, "files", "ls", "-p", "vol-foot")
    assert "seen.txt" in shown.stdout and ".hidden" not in shown.stdout
    assert shown.stderr.strip() == "1 files, 5 B (and 1 hidden, 3 B: --all shows them)"
    every = podrun_cli(*c, "files", "ls", "--all", "-p", "vol-foot")
    assert ".hidden" in every.stdout and every.stderr.strip() == "2 files, 8 B"
