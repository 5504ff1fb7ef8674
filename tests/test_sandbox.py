"""Sandboxes hold, also when podrun runs as root: a pod is treated as an attacker.

Real pods under the container driver (the CG2 driver). Each test plays one escape or
visibility attempt and asserts both what the pod saw and that nothing on the host changed.
They run where podman can start the prepared base image (``.ci/run`` prepares it, as root);
elsewhere they skip with the engine's own error.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.errors import InvalidRequest
from podrun.platform.local import LocalPlatform, drivers
from podrun.platform.local import container as _container
from podrun.platform.types import PodSpec

from .platforms import needs_engine, two_tenants, wait_terminal

REPO = Path(__file__).resolve().parents[1]
IMAGE = "python:3.11-slim"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the escapes were found with podrun running as root")


@pytest.fixture
def pods(podrun_home: Path) -> Iterator[dict[str, LocalPlatform]]:
    """Two tenants of one root (as in a shared emulator), stopped and checked for leftovers."""
    with two_tenants(podrun_home / "local", stop_grace=2) as made:
        yield made


def _run(platform: LocalPlatform, pod_name: str, code: str, **extra: object) -> dict:
    """Run ``code`` in a pod; it writes a JSON report to /data/report.json, returned here."""
    platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name=pod_name, command="python3",
                             args=["-c", code], **extra))  # type: ignore[arg-type]
    state = wait_terminal(platform, pod_name)
    log = (platform._pod_dir(pod_name) / "stdout.log").read_text(errors="replace")
    assert state.detail["reason"] == "Completed", log
    return json.loads((platform.volume_path(pod_name) / "report.json").read_text())


PROBE = """
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
def attempt(fn, *args):
    if fn(*args) == 0:
        return "succeeded"
    return errno.errorcode[ctypes.get_errno()]
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
MS_REMOUNT, MS_BIND = 32, 4096
report = {
    "caps": [status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")],
    "no_new_privs": status["NoNewPrivs"].strip(),
    "uid_map": open("/proc/self/uid_map").read().split(),
    "remount_usr_rw": attempt(libc.mount, None, b"/usr", None, MS_REMOUNT | MS_BIND, None),
    "mount_tmpfs": attempt(libc.mount, b"none", b"/tmp", b"tmpfs", 0, None),
    "sethostname": attempt(libc.sethostname, b"owned", 5),
    "setuid": attempt(libc.setuid, 1),
    "chroot": attempt(libc.chroot, b"/tmp"),
    "unshare_net": attempt(libc.unshare, 0x40000000),
}
try:
    open("/usr/podrun-escape-marker", "w").write("x")
    report["wrote_usr"] = True
except OSError:
    report["wrote_usr"] = False
json.dump(report, open("/data/report.json", "w"))
"""


@needs_engine
@as_root
def test_a_pod_has_no_capability_and_cannot_remount_mount_or_change_identity(pods: dict[str, LocalPlatform]) -> None:
    report = _run(pods["alice"], "probe", PROBE)
    assert report["caps"] == ["0000000000000000"] * 5 and report["no_new_privs"] == "1"
    inside, outside, count = report["uid_map"]
    assert (inside, outside) == ("0", str(_container.POD_UID_BASE)) and int(count) <= 65536  # root is not host root
    for name in ("remount_usr_rw", "mount_tmpfs", "sethostname", "setuid", "chroot", "unshare_net"):
        assert report[name] == "EPERM", (name, report[name])
    # The image's root is the pod's own copy: a write there never reaches the host's /usr.
    assert not Path("/usr/podrun-escape-marker").exists()


VISIBILITY = """
import json, os, sys
paths = json.loads(sys.argv[1])
procs = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue  # this probe's own command line holds the host paths it looks for
    try:
        procs.append(open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")[0].decode(errors="replace"))
    except OSError:
        pass
json.dump({"seen": {p: os.path.exists(p) for p in paths}, "procs": procs, "hostname": os.uname().nodename,
           "tmp": os.listdir("/tmp"), "python": sys.version_info[:2], "exe": sys.executable,
           "import_podrun": __import__("importlib.util").util.find_spec("podrun") is not None},
          open("/data/report.json", "w"))
"""


@needs_engine
def test_nothing_of_the_host_is_visible_in_a_pod(pods: dict[str, LocalPlatform], tmp_path: Path) -> None:
    alice, bob = pods["alice"], pods["bob"]
    bob.uplink([("secret.txt", b"bob's")], pod_name="vault")
    alice.uplink([("mine.txt", b"alice's")], pod_name="other")
    (tmp_path / "host-tmp-file").write_text("host")
    host_paths = [sys.prefix, str(REPO), str(REPO / "src" / "podrun"), str(alice.root), str(bob.volume_path("vault")),
                  str(alice.volume_path("other")), str(tmp_path), str(Path.home() / ".local"), "/work", "/clients"]
    alice.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="look", command="python3",
                          args=["-c", VISIBILITY, json.dumps(host_paths)]))
    assert wait_terminal(alice, "look").detail["reason"] == "Completed", (alice._pod_dir("look") / "stdout.log").read_text()
    report = json.loads((alice.volume_path("look") / "report.json").read_text())
    assert not any(report["seen"].values()), {p: s for p, s in report["seen"].items() if s}
    assert report["hostname"] == "alice-look" and report["tmp"] == []  # private /tmp
    assert report["exe"].startswith("/usr/local/bin/python") and not report["import_podrun"]  # the image's Python, no client venv
    # Only the pod's own processes (its init, then this probe): no host process, so not the emulator's or
    # the client's command lines (where passwords have lived).
    assert report["procs"] == ["/run/podman-init"]


def _planted(tmp: Path, marker: Path) -> Path:
    """A directory of programs named like what the host runs (engine, runtimes, interpreters,
    firewall), each of which would leave ``marker`` if the host ever ran it."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name in ("podman", "docker", "python3", "python", "runc", "crun", "conmon", "catatonit", "iptables",
                 "ip6tables", "netavark", "aardvark-dns", "true", "sh", "env"):
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {marker}\nexit 0\n")
        path.chmod(0o755)
    return bin_dir


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@needs_engine
def test_envs_and_the_callers_environment_never_reach_the_host_side(pods: dict[str, LocalPlatform], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    alice = pods["alice"]
    marker = tmp_path / "ran-on-host"
    evil = _planted(tmp_path, marker)
    hostile = {"PATH": f"{evil}:/usr/local/bin:/usr/bin:/bin", "LD_PRELOAD": str(evil / "libevil.so"),
               "LD_LIBRARY_PATH": str(evil), "PYTHONPATH": str(evil), "CONTAINERS_CONF": str(evil / "c.conf")}
    for key, value in hostile.items():  # the client's own environment is hostile too
        monkeypatch.setenv(key, value)
    alice.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="env", command="python3",
                          args=["-c", "import json, os, time; json.dump(dict(os.environ), open('/data/report.json', 'w'));"
                                      " time.sleep(30)"],
                          envs=hostile))
    deadline = time.monotonic() + 60
    while not (alice.volume_path("env") / "report.json").is_file() and time.monotonic() < deadline:
        assert not alice.pod_status("env").is_terminal, (alice._pod_dir("env") / "stdout.log").read_text()
        time.sleep(0.05)
    supervisor = int((alice._pod_dir("env") / "supervisor.pid").read_text())
    engines = _children(supervisor)
    assert engines  # the engine client the supervisor runs
    fixed = {supervisor: _container.engine_env(), **{pid: _container.find_engine(alice.images).environment() for pid in engines}}
    for pid, expected in fixed.items():  # fixed, and nothing of the pod's or the caller's
        assert _environ(pid) == expected, pid
        assert not Path(f"/proc/{pid}/exe").resolve().is_relative_to(evil)
    inside = json.loads((alice.volume_path("env") / "report.json").read_text())
    assert {k: inside[k] for k in hostile} == hostile  # the pod's variables are set inside the pod only
    alice.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="env", command="true"))  # replace: stop path
    wait_terminal(alice, "env")
    assert not marker.exists(), marker.read_text()
    argv = json.loads((alice._pod_dir("env") / "spec.json").read_text())["argv"]
    assert not any(value in " ".join(argv) for value in hostile.values())  # no pod value on a command line either


@needs_engine
def test_a_tenant_cannot_reach_another_tenants_volume_through_the_host_path(pods: dict[str, LocalPlatform]) -> None:
    alice, bob = pods["alice"], pods["bob"]
    bob.uplink([("secret.txt", b"bob's secret")], pod_name="vault")
    target = bob.volume_path("vault") / "secret.txt"
    code = (f"import json, os\np = {str(target)!r}\nout = {{}}\n"
            "for candidate in (p, '/data/../' + p, '/proc/1/root' + p, '/proc/self/root' + p):\n"
            "    try: out[candidate] = open(candidate).read()\n"
            "    except OSError as e: out[candidate] = type(e).__name__\n"
            "json.dump(out, open('/data/report.json', 'w'))")
    report = _run(alice, "thief", code)
    assert "bob's secret" not in json.dumps(report) and set(report.values()) == {"FileNotFoundError"}


@needs_engine
@as_root
def test_volume_files_stay_private_on_the_host_and_belong_to_the_pods_uid(pods: dict[str, LocalPlatform]) -> None:
    alice = pods["alice"]
    _run(alice, "own", "import json; json.dump({}, open('/data/report.json', 'w'))")
    made = alice.volume_path("own") / "report.json"
    # Written by the pod's root: on the host that is an unprivileged uid, owner of nothing else.
    assert made.stat().st_uid == _container.POD_UID_BASE and not stat.S_ISUID & made.stat().st_mode


def test_process_driver_refuses_raw_commands_naming_data_and_says_what_it_is(podrun_home: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drivers, "_notes", set())
    platform = LocalPlatform(podrun_home / "local", driver="process")
    for command, args in (("/bin/sh", ["-c", "echo x > /data/x"]), ("python3", ["/data/script.py"]), ("cat /data/a", [])):
        with pytest.raises(InvalidRequest, match="names /data.*'container' driver"):
            platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="raw", command=command, args=args))
    assert not Path("/data/x").exists()
    with pytest.warns(drivers.HostPodsWarning, match="not CG2-like|unlike CG2"):
        platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="ok", command="python3",
                                 args=["-c", "import os; open(os.environ['PODRUN_DATA'] + '/x', 'w').write('ok')"]))
    assert wait_terminal(platform, "ok").detail["reason"] == "Completed"
    assert (platform.volume_path("ok") / "x").read_text() == "ok"
    platform.shutdown()


def test_process_driver_resolves_programs_on_the_fixed_path_only(podrun_home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = _planted(tmp_path, marker)
    platform = LocalPlatform(podrun_home / "local", driver="process")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", drivers.HostPodsWarning)  # said once per process; the test above checks it
        platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="p", command="true",
                                 envs={"PATH": str(evil)}))
    assert wait_terminal(platform, "p").detail["reason"] == "Completed"
    assert not marker.exists()
    assert json.loads((platform._pod_dir("p") / "spec.json").read_text())["argv"][0] in ("/usr/bin/true", "/bin/true")
    platform.shutdown()


SPAWN_PROBE = """
import json, os, signal, sys
with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
    parent = f.read()
print(json.dumps({"cwd": os.getcwd(), "node": os.environ.get("PODRUN_NODE"), "stdin": sys.stdin.read(),
                  "sigterm": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
                  "blocked": sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])), "own_session": os.getsid(0) == os.getpid(),
                  "by_supervisor": b"supervisor.py" in parent}))
print("to stderr", file=sys.stderr)
"""


@pytest.mark.parametrize("scheduled", [False, True])
def test_a_pod_starts_as_its_spec_says_before_and_after_its_supervisor_loads(podrun_home: Path, scheduled: bool) -> None:
    """A pod to start now is started from the ``spawn`` file before its supervisor has loaded
    anything; a scheduled one from its spec when its time comes. Either way: its cwd, env,
    stdin from /dev/null, stdout and stderr in the log, a session of its own, no signal ignored
    (SIGPIPE neither, which the supervisor's Python ignores) nor blocked, its supervisor its parent."""
    from datetime import datetime, timedelta, timezone

    platform = LocalPlatform(podrun_home / "local", driver="process")
    at = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat() if scheduled else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", drivers.HostPodsWarning)
        platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="spawned", command="/bin/sh",
                                 args=["-c", f"grep -E '^Sig(Ign|Blk)' /proc/self/status; exec python3 -c '{SPAWN_PROBE}'"],
                                 scheduled_time=at))
    assert (platform._pod_dir("spawned") / "spawn").exists() is not scheduled
    assert wait_terminal(platform, "spawned").detail["reason"] == "Completed"
    lines = sorted((platform._pod_dir("spawned") / "stdout.log").read_text().splitlines())
    blocked, ignored = (int(line.split()[1], 16) for line in lines[:2])  # as the shell got them
    numbers = [n for n in range(1, 65) if (blocked | ignored) >> (n - 1) & 1]
    assert not set(numbers) & set(signal.valid_signals())  # glibc's own (32, 33) set up again by each C library
    assert lines[2] == "to stderr"
    assert json.loads(lines[3]) == {"cwd": str(platform.volume_path("spawned")), "node": "MPU", "stdin": "",
                                    "sigterm": True, "blocked": [], "own_session": True, "by_supervisor": True}
    platform.shutdown()


def test_the_emulator_refuses_host_pods_unless_told_out_loud(podrun_home: Path) -> None:
    import subprocess

    users = podrun_home / "users"
    users.write_text("alice:secret-pw\n")
    base = [sys.executable, "-m", "podrun.emulator", "--users-file", str(users), "--port", "1"]
    env = {k: v for k, v in os.environ.items() if k != "PODRUN_LOCAL_DRIVER"}
    for argv, extra in ((["--driver", "process"], {}), ([], {"PODRUN_LOCAL_DRIVER": "process"})):
        done = subprocess.run(base + argv, capture_output=True, text=True, timeout=60, env={**env, **extra})
        assert done.returncode != 0 and "--unsafe-host-pods" in done.stderr and "Uvicorn running" not in done.stderr


def test_config_show_says_which_driver_pods_get(podrun_home: Path) -> None:
    import subprocess

    env = {**os.environ, "PODRUN_LOCAL_DRIVER": "process", "COLUMNS": "200"}
    done = subprocess.run([str(Path(sys.executable).with_name("podrun")), "config", "show"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0 and "pods run as" in done.stdout and "NOT isolated" in done.stdout, done.stdout


@needs_engine
@as_root
def test_handing_the_volume_to_the_pod_never_follows_a_planted_symlink(pods: dict[str, LocalPlatform], tmp_path: Path) -> None:
    alice = pods["alice"]
    target = tmp_path / "host-secret"
    target.write_text("root's")
    plant = (f"import json, os\nos.symlink({str(target)!r}, '/data/link')\nos.symlink({str(tmp_path)!r}, '/data/dirlink')\n"
             "json.dump({}, open('/data/report.json', 'w'))")
    _run(alice, "planter", plant)
    _run(alice, "planter", "import json; json.dump({}, open('/data/report.json', 'w'))")  # the next start hands /data over
    assert target.stat().st_uid == 0 and tmp_path.stat().st_uid == 0  # the symlinks' targets stay the host's
    assert (alice.volume_path("planter") / "link").lstat().st_uid == _container.POD_UID_BASE
