"""The inbound firewall of one container pod: an OCI ``createRuntime`` hook, run as
``python -I -S pod_firewall.py NSENTER IPTABLES_RESTORE IP6TABLES_RESTORE`` by the OCI runtime.

Why a hook: a pod's declared ``ports`` are what the user's other pods may reach, but traffic
between two pods of one bridge never crosses the host's IP firewall (unless br_netfilter is
loaded, which podrun does not impose on the machine). So each pod gets its own inbound rules,
in its own network namespace: the runtime runs this hook as root, after it made the namespace
and before the workload starts (podman adds the pod's interface after), and a hook that fails
fails the container, so no pod runs without its rules. The pod cannot change them: it holds
no capability, its bounding set is empty (``container.hardening_args``), and a user namespace
it makes for itself gives it no power over the network namespace it was given.

Rules, IPv4 and IPv6 alike: accept loopback (the pod's own address goes through it), replies
(established, related), ICMP (ping; ICMPv6 also carries neighbour discovery) and the declared
ports over TCP and UDP; refuse the rest as a closed port does (TCP reset, ICMP port
unreachable), so a client fails at once instead of waiting for a timeout.

Standard library only and no imports from podrun (like ``supervisor.py``): with the two loads
it costs about 50 ms of CPU per pod start (``benchmarks/pods.py``). The executables it runs are
absolute paths resolved by podrun (``network.py``) and the runtime gives it the fixed
environment of the hook's file. The OCI state on stdin names the pod's first process (``pid``)
and carries podrun's annotation ``podrun.ports`` (space-separated port numbers).
"""

from __future__ import annotations

import json
import os
import re
import sys

ANNOTATION = "podrun.ports"
_FAMILIES = (("icmp", "icmp-port-unreachable"), ("ipv6-icmp", "icmp6-port-unreachable"))


def parse_ports(text: str) -> list[int]:
    """The annotation's ports, sorted and distinct; ValueError for anything but port numbers."""
    ports = set()
    for item in text.split():
        if not re.fullmatch(r"[0-9]{1,5}", item) or not 1 <= int(item) <= 65535:
            raise ValueError(f"not a port number: {item!r}")
        ports.add(int(item))
    return sorted(ports)


def rules(ports: list[int], icmp: str, unreachable: str) -> str:
    """One family's ``iptables-restore`` input: the pod's INPUT chain, everything else open."""
    lines = ["*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
             "-A INPUT -i lo -j ACCEPT",
             "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
             "-A INPUT -m conntrack --ctstate INVALID -j DROP",
             f"-A INPUT -p {icmp} -j ACCEPT"]
    for port in ports:
        lines += [f"-A INPUT -p tcp --dport {port} -j ACCEPT", f"-A INPUT -p udp --dport {port} -j ACCEPT"]
    lines += ["-A INPUT -p tcp -j REJECT --reject-with tcp-reset",
              f"-A INPUT -p udp -j REJECT --reject-with {unreachable}", "COMMIT", ""]
    return "\n".join(lines)


def install(state: dict, nsenter: str, restores: tuple[str, str]) -> None:
    """Load both families' rules into the network namespace of the state's process (the two
    loads run at once: this is on every pod's start). Their errors go to this hook's stderr,
    which the runtime reports."""
    pid = state["pid"]
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        raise ValueError(f"the OCI state names no container process: pid {pid!r}")
    ports = parse_ports(str((state.get("annotations") or {}).get(ANNOTATION, "")))
    # A kernel without IPv6 (ipv6.disable=1) has no IPv6 to filter, nor ip6tables to load.
    families = zip(restores, _FAMILIES, strict=True) if os.path.isdir("/proc/sys/net/ipv6") else [(restores[0], _FAMILIES[0])]
    loads = [(restore, *_spawn([nsenter, f"--net=/proc/{pid}/ns/net", restore]), rules(ports, icmp, unreachable))
             for restore, (icmp, unreachable) in families]
    failures = []
    for restore, child, stdin, text in loads:
        with open(stdin, "w") as pipe:  # closing it ends the rules
            pipe.write(text)
        code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        if code != 0:
            failures.append(f"{restore} failed in the pod's network namespace (exit status {code})")
    if failures:
        raise RuntimeError("; ".join(failures))


def _spawn(argv: list[str]) -> tuple[int, int]:
    """Start ``argv`` (an absolute path) reading a pipe: its pid and the pipe's writing end.
    ``os.posix_spawn`` rather than ``subprocess``, whose import alone costs this hook a third."""
    read, write = os.pipe()
    try:
        child = os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=[(os.POSIX_SPAWN_DUP2, read, 0)])
    except OSError:
        os.close(write)
        raise
    finally:
        os.close(read)
    return child, write


def main(argv: list[str]) -> int:
    try:
        nsenter, restore4, restore6 = argv
        install(json.load(sys.stdin), nsenter, (restore4, restore6))
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as exc:
        print(f"podrun: the pod's inbound firewall could not be set, so the pod does not start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
