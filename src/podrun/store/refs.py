"""``ObjectRef`` and ``ObjectKey``: names of objects in a pod's volume.

A key is ``<pod_name>/<namespace>/<object_id>`` (flamepy's ``<app>/<session>/<id>``: a
Runner's name is its pod_name, hence its volume). ``version`` counts from 1; a ref with
``version == 0`` asks for a full download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidKey

_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_POD = "_default"  # the key component naming the user's default volume


def _check_component(value: str, what: str) -> str:
    if not isinstance(value, str) or not _COMPONENT.match(value) or ".." in value:
        raise InvalidKey(
            f"invalid {what} {value!r} in an object key: use letters, digits, '.', '_' and '-' "
            "(no '/', no '..'), e.g. 'my-pod/shared/model'"
        )
    return value


@dataclass(frozen=True)
class ObjectKey:
    pod_name: str
    namespace: str
    object_id: str | None = None

    def __post_init__(self) -> None:
        if self.pod_name != DEFAULT_POD:  # the one name allowed to start with '_'
            _check_component(self.pod_name, "pod_name")
        _check_component(self.namespace, "namespace")
        if self.object_id is not None:
            _check_component(self.object_id, "object id")

    @classmethod
    def parse(cls, text: str) -> ObjectKey:
        """``"pod/ns"`` (a prefix) or ``"pod/ns/id"`` (a full key)."""
        parts = text.split("/") if isinstance(text, str) else []
        if len(parts) not in (2, 3):
            raise InvalidKey(
                f"invalid object key {text!r}: use '<pod_name>/<namespace>' or '<pod_name>/<namespace>/<object_id>'"
            )
        return cls(*parts)

    @property
    def is_prefix(self) -> bool:
        return self.object_id is None

    @property
    def volume_pod_name(self) -> str | None:
        """The platform pod_name whose volume holds the object (None: the default volume)."""
        return None if self.pod_name == DEFAULT_POD else self.pod_name

    def __str__(self) -> str:
        return f"{self.pod_name}/{self.namespace}" + (f"/{self.object_id}" if self.object_id else "")


@dataclass(frozen=True)
class ObjectRef:
    """A versioned reference to an object; pass it to ``.remote()`` calls on the same
    pod_name and the pod reads it from its volume without crossing the link."""

    key: str
    version: int = 0

    def __post_init__(self) -> None:
        parsed = ObjectKey.parse(self.key)
        if parsed.is_prefix:
            raise InvalidKey(
                f"an ObjectRef needs a full key '<pod_name>/<namespace>/<object_id>', not the prefix {self.key!r}"
            )
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise InvalidKey(f"ObjectRef version must be an integer >= 0, not {self.version!r}")

    @property
    def object_key(self) -> ObjectKey:
        return ObjectKey.parse(self.key)
