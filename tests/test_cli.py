"""The ``podrun`` command end to end: on the local platform and on the EM emulator (a real
server subprocess), picked through a contexts file, with real effects checked each time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import podrun
from podrun.cli import app
from podrun.client import config, journal
from podrun.platform.em import EMPlatform

from .conftest import image_tar
from .platforms import container_reason, shared_emulator

ROOT = Path(__file__).resolve().parents[1]


def square(x: int) -> int:
    return x * x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def podrun_cli(*args: str, ok: bool = True) -> Result:
    """Run ``podrun ARGS`` in this process (wide columns: table cells stay on one line)."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    if ok:
        assert result.exit_code == 0, f"podrun {' '.join(args)} failed ({result.exit_code}):\n{result.output}"
    return result


def podrun_process(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``podrun ARGS`` as a separate process (another client, as after a crash)."""
    return subprocess.run([sys.executable, "-m", "podrun.cli", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, "COLUMNS": "250"})


@pytest.fixture(params=["local", "em"])
def context(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A contexts file with one context per platform; yields the context this test uses."""
    server = shared_emulator(request) if request.param == "em" else None
    user, password = server.add_user("cli") if server else ("", "")
    path = tmp_path / "config.toml"
    if container_reason() is None:  # the local context's pods run as on CG2 (raw commands write /data)
        monkeypatch.setenv("PODRUN_LOCAL_DRIVER", "container")
    path.write_text('current-context = "here"\n\n[contexts.here]\nplatform = "local"\n'
                    + (f'\n[contexts.em]\nplatform = "em"\nurl = "{server.url}"\nusername = "{user}"\n'
                       f'password-env = "CLI_TEST_PASSWORD"\n' if server else ""))
    monkeypatch.setenv("PODRUN_CONFIG", str(path))
    monkeypatch.setenv("CLI_TEST_PASSWORD", password)
    yield "here" if server is None else "em"
    if server is not None:  # deleting the volumes stops the user's pods in the emulator
        with EMPlatform(server.url, user, password, timeout=30, retry_deadline=10) as em:
            for name in em.pvc_list():
                em.pvc_delete(name)


def test_files_round_trip_with_progress(context, tmp_path):
    big = os.urandom(3 * 1024 * 1024)  # above 1 MB: a progress bar
    (tmp_path / "big.bin").write_bytes(big)
    (tmp_path / "note.txt").write_text("hello")
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "leaf.txt").write_text("leaf")
    c = ("--context", context)
    put = podrun_cli(*c, "files", "put", str(tmp_path / "big.bin"), str(tmp_path / "note.txt"), str(tmp_path / "tree"),
                     "--dest", "in", "--pod-name", "cli-files")
    assert "uplinked 3 files" in put.stderr and "uplink 3 files" in put.stderr  # the bar's label
    listing = podrun_cli(*c, "files", "ls", "in", "-p", "cli-files").stdout
    for name in ("big.bin", "3.0 MiB", "note.txt", "5 B", "tree/", "sub/", "leaf.txt"):
        assert name in listing
    got = podrun_cli(*c, "files", "get", "in/big.bin", str(tmp_path / "back.bin"), "-p", "cli-files")
    assert (tmp_path / "back.bin").read_bytes() == big and "downlink in/big.bin" in got.stderr
    podrun_cli(*c, "files", "get", "in/tree", str(tmp_path / "tree-back"), "-p", "cli-files")
    assert (tmp_path / "tree-back" / "sub" / "leaf.txt").read_text() == "leaf"
    assert podrun_cli(*c, "files", "get", "in/note.txt", "-", "-p", "cli-files").stdout == "hello"
    podrun_cli(*c, "files", "rm", "in/tree", "-p", "cli-files")
    assert "leaf.txt" not in podrun_cli(*c, "files", "ls", "-p", "cli-files").stdout
    assert "leaf.txt" not in podrun_cli(*c, "files", "ls").stdout  # another volume never had it


def test_pods_run_status_and_nodes(context, tmp_path):
    c = ("--context", context)
    podrun_cli(*c, "pods", "run", "python:3.11-slim", "--node", "gpu", "--max-duration", "1", "--pod-name", "cli-pod",
               "--command", "/bin/sh", "--arg", "-c", "--arg", 'echo "$GREETING" > /data/said.txt; exit 3',
               "--env", "GREETING=hi from the pod")
    status = podrun_cli(*c, "pods", "status", "--pod-name", "cli-pod", "--wait", "--timeout", "60").stdout
    assert "terminated" in status and "exitCode" in status and "3" in status
    assert podrun_cli(*c, "files", "get", "said.txt", "-", "-p", "cli-pod").stdout == "hi from the pod\n"
    ran = podrun_cli(*c, "pods", "run", "python:3.11-slim", "-p", "cli-pod", "-m", "1", "--command", "/bin/sh",
                     "--arg", "-c", "--arg", "exit 0", "--wait", "--timeout", "60")
    assert "terminated" in ran.stdout
    nodes = podrun_cli(*c, "nodes").stdout
    assert all(name in nodes for name in ("fpga", "gpu", "mpu1"))


def _journaled(job_count: int, timeout: float = 30) -> list[journal.JournalEntry]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = journal.entries(config.home())
        if len(entries) >= job_count:
            return entries
        time.sleep(0.02)
    raise AssertionError("the job never reached the journal")


def test_jobs_ls_show_attach_from_another_process(context):
    podrun.configure(context=context)
    futures = podrun.remote(square, max_duration=2, pod_name="cli-jobs").map([1, 2, 3])
    assert podrun.get(futures, timeout=120) == [1, 4, 9]
    assert futures[0].job.finished.wait(60)  # results stream in before the job is over; its journal entry is final then
    (entry,) = _journaled(1)
    listing = podrun_cli("--context", context, "jobs", "ls").stdout
    assert entry.job_id in listing and "square ×3" in listing and "OK 3" in listing
    shown = podrun_cli("--context", context, "jobs", "show", entry.job_id).stdout
    assert "cli-jobs" in shown and "square ×3" in shown and "python:3." in shown
    attached = podrun_process("--context", context, "jobs", "attach", entry.job_id)
    assert attached.returncode == 0, attached.stderr
    for value in ("1", "4", "9"):
        assert f"│ OK     │ {value}" in attached.stdout


def test_jobs_cancel_skips_calls_not_started():
    futures = podrun.remote(nap, max_duration=2, pod_name="cli-cancel").map([1.5, 0.0, 0.0])
    (entry,) = _journaled(1)
    podrun_cli("jobs", "cancel", entry.job_id, "--call", "1", "--call", "2")
    assert futures[0].get(timeout=60) == 1.5
    for future in futures[1:]:
        with pytest.raises(podrun.Cancelled):
            future.get(timeout=60)
    attached = podrun_process("jobs", "attach", entry.job_id)
    assert attached.returncode == 1  # some calls did not succeed
    assert attached.stdout.count("CANCELLED") == 2 and "1.5" in attached.stdout


def test_objects_ls_get_rm(tmp_path):
    ref = podrun.put_object("_default/cli", {"weights": [1, 2, 3]})
    ref = podrun.update_object(ref, {"weights": [4, 5, 6]})
    (tmp_path / "raw.bin").write_bytes(b"\x00raw bytes")
    blob = podrun.upload_object("_default/cli/raw", tmp_path / "raw.bin")
    listing = podrun_cli("objects", "ls").stdout
    assert f"│ {ref.key} " in listing and f"│ {blob.key} " in listing
    row = next(line for line in listing.splitlines() if ref.key in line)
    assert "│       2 │" in row  # version 2 after the update
    assert "{'weights': [4, 5, 6]}" in podrun_cli("objects", "get", ref.key).stdout
    podrun_cli("objects", "get", blob.key, "-o", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == b"\x00raw bytes"
    podrun_cli("objects", "rm", blob.key)
    assert blob.key not in podrun_cli("objects", "ls").stdout
    podrun_cli("objects", "rm", "_default/cli")
    gone = podrun_cli("objects", "get", ref.key, ok=False)
    assert gone.exit_code == 1 and "[NOT_FOUND]" in gone.stderr and "Traceback" not in gone.output


def test_images_push_load_build_ls(context, tmp_path):
    c = ("--context", context)
    tar = image_tar(tmp_path / "cli.tar", "cli-pushed", "cli-loaded")  # a real docker save, 14 MB
    pushed = podrun_cli(*c, "images", "push", str(tar), "cli-pushed")
    assert "uplink cli.tar" in pushed.stderr  # above 1 MB: the progress bar
    podrun_cli(*c, "files", "put", str(tar), "--dest", "tars")
    podrun_cli(*c, "images", "load", "tars/cli.tar", "cli-loaded")
    podrun_cli(*c, "images", "build", "cli-built", "--onboard", "--base", "python:3.11-slim")
    listing = podrun_cli(*c, "images", "ls").stdout
    assert all(name in listing for name in ("cli-pushed", "cli-loaded", "cli-built"))
    failed = podrun_cli(*c, "images", "load", "tars/missing.tar", "nope", ok=False)
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert "[IMAGE_LOAD_FAILED]" in failed.stderr and "No such file or directory" in failed.stderr  # the log tail


def test_config_show_with_a_context_file_and_an_env_override(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text('current-context = "dev"\n[contexts.dev]\nplatform = "local"\nuser = "devuser"\n'
                    '[contexts.cg2]\nplatform = "em"\nurl = "http://file.example"\n'
                    'username = "client1"\npassword = "file-secret"\n')
    monkeypatch.setenv("PODRUN_CONFIG", str(path))
    shown = podrun_cli("config", "show").stdout
    assert "devuser" in shown and "[contexts.dev]" in shown and "current-context" in shown
    monkeypatch.setenv("PODRUN_EM_URL", "http://env.example:8000")
    shown = podrun_cli("--context", "cg2", "config", "show").stdout
    url_row = next(line for line in shown.splitlines() if "│ url " in line)
    assert "http://env.example:8000" in url_row and "env PODRUN_EM_URL" in url_row
    assert "client1" in shown and "***" in shown and "file-secret" not in shown
    contexts = podrun_cli("config", "contexts").stdout
    assert "* " in next(line for line in contexts.splitlines() if "dev" in line)


def test_errors_are_one_line_without_traceback(tmp_path, monkeypatch, request):
    unknown = podrun_process("--context", "nowhere", "nodes")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().startswith("error: [ConfigError] unknown context 'nowhere'")
    server = shared_emulator(request)
    path = tmp_path / "config.toml"
    path.write_text(f'[contexts.bad]\nplatform = "em"\nurl = "{server.url}"\nusername = "nobody"\npassword = "wrong"\n')
    monkeypatch.setenv("PODRUN_CONFIG", str(path))
    refused = podrun_cli("--context", "bad", "files", "ls", ok=False)
    assert refused.exit_code == 1 and "Traceback" not in refused.output and "wrong" not in refused.output
    assert refused.stderr.startswith("error: [AUTH_FAILED]") and len(refused.stderr.strip().splitlines()) == 1
    assert podrun_cli("files", "ls", "--pod-name", "Not_A_Name", ok=False).exit_code == 2  # a usage error


def test_bench_runs_the_benchmark_script():
    helped = podrun_cli("bench", "overhead", "-h")  # -h goes to the script itself
    assert "--quick" in helped.stdout and "usage:" in helped.stdout
    assert podrun_cli("bench", "nosuch", ok=False).exit_code == 2


def test_every_benchmark_script_is_a_bench_command():
    from podrun.commands.bench import QUICK, benchmarks_dir

    scripts = {path.stem for path in benchmarks_dir().glob("*.py") if not path.name.startswith("_")}
    assert scripts == set(QUICK)  # a new benchmark is reachable (and smoke-runnable) as `podrun bench NAME`
