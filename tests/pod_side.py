"""Code the tests ship to pods as a module: it imports only what a pod has (podrun's pod
package, ``runtime/pack.py``), and the pod imports it, so its module-level ``@podrun.remote``
and its use of client names run inside the pod, where podrun's client is absent."""

from __future__ import annotations

import sys
from typing import Any

import podrun
from podrun import ObjectFuture  # client API: importable in a pod, unusable there (runtime/pod_api.py)


@podrun.remote(max_duration=1, node="MPU")
def double(x: int) -> int:
    return 2 * x


def refusal(action: Any) -> str | None:
    """The message of the UsageError ``action()`` raises (None if it raises none)."""
    try:
        action()
    except podrun.UsageError as exc:
        return str(exc)
    return None


def report(key: str) -> dict[str, Any]:
    """What a pod sees of podrun: objects read and written on its volume (by key: an ObjectRef
    argument would arrive resolved to its value), the decorated function as a plain one,
    offloading and client names refused with a reason."""
    ref = podrun.latest(key)
    value = podrun.get_object(ref)
    written = podrun.update_object(ref, [*value, len(value) + 1])
    return {
        "value": value, "written": written.version, "doubled": double(21), "decorated": type(double).__module__,
        "data_dir": str(podrun.data_dir()), "offload": refusal(lambda: double.remote(1)),
        "map": refusal(lambda: double.map([1])), "client_only": refusal(ObjectFuture),
        "client_loaded": sorted(m for m in sys.modules if m.startswith(("podrun.client", "podrun.platform", "httpx"))),
    }
