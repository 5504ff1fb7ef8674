"""The platform contract's vocabulary: pod specs, pod states, file entries, nodes, names."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import UsageError

NODES = ("FPGA", "GPU", "MPU")
# nodes_status() names them as Kubernetes does on CG2: lowercase, and the MPU is "mpu1".
NODE_STATUS_NAMES = {"FPGA": "fpga", "GPU": "gpu", "MPU": "mpu1"}

# Kubernetes DNS-1123 label: what CG2's pods and volumes are named by.
_POD_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def normalize_node(node: str) -> str:
    """``"gpu"``, ``"Gpu"`` or ``"GPU"`` → ``"GPU"``; anything else is a ValueError listing the nodes."""
    if isinstance(node, str):
        upper = node.strip().upper()
        if upper == "MPU1":
            upper = "MPU"
        if upper in NODES:
            return upper
    raise UsageError(f"unknown node {node!r}: choose one of {', '.join(NODES)}")


def validate_pod_name(pod_name: str | None) -> str | None:
    """None (the user's default pod and volume) or a DNS-1123 label; ValueError otherwise."""
    if pod_name is None:
        return None
    if not isinstance(pod_name, str) or not _POD_NAME_RE.match(pod_name):
        raise UsageError(
            f"invalid pod_name {pod_name!r}: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'detector-1'), or None for the default volume"
        )
    return pod_name


def validate_max_duration(minutes: float) -> float:
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0:
        raise UsageError(f"max_duration must be a positive number of minutes, not {minutes!r}")
    return minutes


@dataclass(frozen=True)
class PodSpec:
    """What ``run_pod`` takes: the EM API's ``/em/pod/run`` fields, typed.

    ``max_duration`` is in minutes (the EM API takes whole minutes; the local platform also
    takes fractions, which tests use). ``command`` is split into argv without a shell, as the
    EM API does; use ``command="/bin/sh", args=["-c", "..."]`` for shell syntax.
    """

    image: str
    node: str
    max_duration: float
    command: str | list[str] | None = None
    args: list[str] = field(default_factory=list)
    envs: dict[str, Any] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    scheduled_time: datetime | str | None = None
    pod_name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "node", normalize_node(self.node))
        validate_max_duration(self.max_duration)
        validate_pod_name(self.pod_name)
        if not self.image or not isinstance(self.image, str):
            raise UsageError("image must be a non-empty image name, e.g. 'python:3.11-slim'")
        for port in self.ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise UsageError(f"ports must be integers between 1 and 65535, not {port!r}")

    def scheduled_iso(self) -> str | None:
        value = self.scheduled_time
        return value.isoformat() if isinstance(value, datetime) else value


class PodState:
    """A pod's container state in Kubernetes' shape, as ``/em/pod/status`` returns it:
    exactly one of ``waiting{reason,message}``, ``running{startedAt}``,
    ``terminated{exitCode,reason,startedAt,finishedAt}``."""

    PHASES = ("waiting", "running", "terminated")

    def __init__(self, state: dict[str, Any]) -> None:
        phases = [p for p in self.PHASES if p in state]
        if len(phases) != 1:
            raise ValueError(f"a pod state has exactly one of {self.PHASES}, got {sorted(state)}")
        self.phase = phases[0]
        self.detail: dict[str, Any] = dict(state[self.phase] or {})

    @property
    def is_terminal(self) -> bool:
        return self.phase == "terminated"

    @property
    def reason(self) -> str | None:
        return self.detail.get("reason")

    @property
    def message(self) -> str | None:
        return self.detail.get("message")

    @property
    def exit_code(self) -> int | None:
        return self.detail.get("exitCode")

    @property
    def is_stuck(self) -> bool:
        """Waiting for a reason that will not resolve by itself (the image cannot be pulled)."""
        return self.phase == "waiting" and self.reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName")

    def to_dict(self) -> dict[str, Any]:
        return {self.phase: dict(self.detail)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PodState) and other.to_dict() == self.to_dict()

    def __repr__(self) -> str:
        return f"PodState({self.to_dict()!r})"


@dataclass
class FileEntry:
    """One node of ``list_files``' tree. ``size`` is bytes (the EM API sends a string; parsed
    here), ``time`` is ``YYYY-MM-DD-HH-MM``, ``hash`` a signed 64-bit integer on files only."""

    type: str  # "file" | "directory"
    name: str
    size: int
    time: str
    hash: int | None = None
    contents: list[FileEntry] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileEntry:
        return cls(
            type=data["type"],
            name=data["name"],
            size=int(data.get("size") or 0),
            time=str(data.get("time", "")),
            hash=data.get("hash"),
            contents=[cls.from_dict(child) for child in data.get("contents") or []],
        )

    def to_dict(self) -> dict[str, Any]:
        """The EM API's JSON shape (size as a string)."""
        data: dict[str, Any] = {"type": self.type, "name": self.name, "size": str(self.size), "time": self.time}
        if self.type == "file":
            data["hash"] = self.hash
        else:
            data["contents"] = [child.to_dict() for child in self.contents]
        return data


def walk_entries(entries: list[FileEntry], prefix: str = "") -> dict[str, FileEntry]:
    """Flatten a listing into ``{"dir/sub/file": entry}`` for files only."""
    files: dict[str, FileEntry] = {}
    for entry in entries:
        path = f"{prefix}{entry.name}"
        if entry.type == "directory":
            files.update(walk_entries(entry.contents, path + "/"))
        else:
            files[path] = entry
    return files
