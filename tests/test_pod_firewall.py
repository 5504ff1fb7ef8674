"""Each pod's inbound firewall hook (``pod_firewall.py``) by itself, run as the OCI runtime runs
it (a subprocess with the OCI state on stdin), and the hook file podrun writes for podman. The
firewall in real pods is tested in ``test_network.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podrun.errors import PlatformError
from podrun.platform.local import container as _container
from podrun.platform.local import network as _network
from podrun.platform.local import pod_firewall


@given(st.lists(st.integers(1, 65535), max_size=40))
def test_the_hook_reads_back_the_ports_podrun_annotates(ports: list[int]) -> None:
    text = " ".join(str(port) for port in ports)
    assert pod_firewall.parse_ports(text) == sorted(set(ports))
    rules = pod_firewall.rules(pod_firewall.parse_ports(text), "icmp", "icmp-port-unreachable")
    accepted = [line for line in rules.splitlines() if line.endswith("-j ACCEPT") and "--dport" in line]
    assert len(accepted) == 2 * len(set(ports))  # tcp and udp each


@given(st.text(max_size=20).filter(lambda text: any(not (item.isascii() and item.isdigit() and 1 <= int(item) <= 65535)
                                                     for item in text.split())))
def test_the_hook_refuses_an_annotation_that_is_not_ports(text: str) -> None:
    with pytest.raises(ValueError, match="not a port number"):
        pod_firewall.parse_ports(text)


@pytest.mark.parametrize("state", ['{"pid": 1}', '{"pid": "1; reboot"}', "{}", "not json",
                                   '{"pid": 999999999, "annotations": {"podrun.ports": "80"}}'])
def test_the_hook_fails_closed(state: str) -> None:
    """A hook that cannot set the rules exits non-zero, so the runtime does not start the pod."""
    done = subprocess.run([sys.executable, "-I", "-S", pod_firewall.__file__, "/usr/bin/nsenter", "/usr/sbin/iptables-restore",
                           "/usr/sbin/ip6tables-restore"], input=state, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "the pod's inbound firewall could not be set, so the pod does not start" in done.stderr


def test_a_missing_firewall_tool_is_named_with_its_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_network, "HOST_PATH", str(tmp_path))  # an empty PATH: none of the tools is there
    with pytest.raises(PlatformError, match="nsenter .*apt-get install util-linux"):
        _network.firewall_hooks(tmp_path / "root")
    assert not (tmp_path / "root" / "networks" / "hooks").exists()


def test_the_hook_file_names_absolute_tools_and_a_fixed_environment(tmp_path: Path) -> None:
    folder = _network.firewall_hooks(tmp_path)
    (hook_file,) = folder.iterdir()
    hook = json.loads(hook_file.read_text())
    assert hook["stages"] == ["createRuntime"] and hook["when"] == {"always": True}
    args = hook["hook"]["args"]
    assert args[1:3] == ["-I", "-S"] and all(os.path.isabs(arg) for arg in [hook["hook"]["path"], *args[3:]])
    assert [Path(arg).name for arg in args[3:]] == ["pod_firewall.py", "nsenter", "iptables-restore", "ip6tables-restore"]
    assert hook["hook"]["env"] == [f"PATH={_container.HOST_PATH}", "LANG=C.UTF-8"]
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
