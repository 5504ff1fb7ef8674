"""flamepy's ``resreq``: ``"cpu=1,mem=1g,gpu=0"`` and what it means on a pod.

A service's resource requirement picks the node (``gpu`` > 0 needs the GPU node) and becomes
the pod's declared limits, passed to the pod as ``PODRUN_CPU``, ``PODRUN_MEMORY`` (bytes) and
``PODRUN_GPU`` so code there can size itself to them. CG2's ``run_pod`` has no resource
fields, so the platform does not enforce them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError, UsageTypeError

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:ib|i|b)?$", re.IGNORECASE)
_KEYS = {"cpu": "cpu", "mem": "memory", "memory": "memory", "gpu": "gpu"}
FORMAT_HINT = "write it as flamepy does, e.g. 'cpu=1,mem=1g,gpu=0' (cpu: cores, mem: bytes with k/m/g/t, gpu: a count)"


@dataclass(frozen=True)
class ResourceRequirement:
    """Cores, memory (bytes) and GPUs a service asks for; None where not said."""

    cpu: float | None = None
    memory: int | None = None
    gpu: int | None = None

    def __post_init__(self) -> None:
        if self.cpu is not None and (isinstance(self.cpu, bool) or not isinstance(self.cpu, (int, float))
                                     or not math.isfinite(self.cpu) or self.cpu <= 0):
            raise UsageError(f"resreq cpu must be a number of cores > 0, not {self.cpu!r}; {FORMAT_HINT}")
        if self.memory is not None and (isinstance(self.memory, bool) or not isinstance(self.memory, int) or self.memory <= 0):
            raise UsageError(f"resreq memory must be a number of bytes > 0, not {self.memory!r}; {FORMAT_HINT}")
        if self.gpu is not None and (isinstance(self.gpu, bool) or not isinstance(self.gpu, int) or self.gpu < 0):
            raise UsageError(f"resreq gpu must be a count >= 0, not {self.gpu!r}; {FORMAT_HINT}")

    @classmethod
    def from_string(cls, text: str) -> ResourceRequirement:
        """``"cpu=1,mem=1g,gpu=0"``: comma-separated ``key=value``; keys cpu, mem (or memory), gpu."""
        if not isinstance(text, str):
            raise UsageTypeError(f"resreq must be a string such as 'cpu=1,mem=1g', not {type(text).__name__}")
        fields: dict[str, Any] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, sep, value = (s.strip() for s in part.partition("="))
            name = _KEYS.get(key.lower())
            if not sep or name is None or not value:
                raise UsageError(f"resreq {text!r}: cannot read {part!r}; {FORMAT_HINT}")
            if name in fields:
                raise UsageError(f"resreq {text!r} gives {key} twice; {FORMAT_HINT}")
            fields[name] = _parse(name, value, text)
        return cls(**fields)

    def node(self) -> str | None:
        """The node these resources need, where they need one."""
        return "GPU" if self.gpu else None

    def envs(self) -> dict[str, str]:
        """What the pod is told of its limits."""
        values = {"PODRUN_CPU": self.cpu, "PODRUN_MEMORY": self.memory, "PODRUN_GPU": self.gpu}
        return {name: f"{value:g}" if isinstance(value, float) else str(value)
                for name, value in values.items() if value is not None}

    def __str__(self) -> str:
        parts = []
        if self.cpu is not None:
            parts.append(f"cpu={self.cpu:g}")
        if self.memory is not None:
            parts.append(f"mem={self.memory}")
        if self.gpu is not None:
            parts.append(f"gpu={self.gpu}")
        return ",".join(parts)


def _parse(name: str, value: str, text: str) -> float | int:
    try:
        if name == "cpu":
            return float(value)
        if name == "gpu":
            return int(value)
    except ValueError:
        raise UsageError(f"resreq {text!r}: {name}={value!r} is not a number; {FORMAT_HINT}") from None
    match = _MEMORY.match(value)
    if not match:
        raise UsageError(f"resreq {text!r}: mem={value!r} is not an amount of memory; {FORMAT_HINT}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_resreq(resreq: Any) -> ResourceRequirement | None:
    """None, a string, a mapping, a ResourceRequirement, or any object with ``cpu``,
    ``memory`` and ``gpu`` attributes (flamepy's own ResourceRequirement)."""
    if resreq is None or isinstance(resreq, ResourceRequirement):
        return resreq
    if isinstance(resreq, str):
        return ResourceRequirement.from_string(resreq)
    if isinstance(resreq, dict):
        unknown = set(resreq) - set(_KEYS)
        if unknown:
            raise UsageError(f"resreq has unknown key(s) {sorted(unknown)}; known: cpu, mem, gpu")
        return ResourceRequirement.from_string(",".join(f"{k}={v}" for k, v in resreq.items()))
    if all(hasattr(resreq, name) for name in ("cpu", "memory", "gpu")):
        return ResourceRequirement(resreq.cpu or None, resreq.memory or None, resreq.gpu)
    raise UsageTypeError(f"resreq must be a string such as 'cpu=1,mem=1g,gpu=0', a dict or a ResourceRequirement, "
                         f"not {type(resreq).__name__}")
