"""podrun's typed errors.

Every layer raises these, so a user catches one taxonomy whether the failure came from
the platform (HTTP or local), the wire format or the remote function itself.
"""

from __future__ import annotations

import sys
from typing import Any


class PodrunError(Exception):
    """Base of every error podrun raises on purpose."""


class ConfigError(PodrunError, ValueError):
    """The configuration is wrong: an unknown platform or context, a bad configuration file,
    a missing setting. A ValueError too, as the checks of ``configure`` always were."""


class PlatformError(PodrunError):
    """The platform refused or failed a request.

    ``code`` is the platform's ``error`` field (e.g. ``NO_FILES``), ``status`` the HTTP status
    where there was one, ``log_tail`` the build or load log lines the EM API returns.
    """

    default_code = "PLATFORM_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        log_tail: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.status = status
        self.log_tail = list(log_tail or [])

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        if self.log_tail:
            text += "\n" + "".join(line if line.endswith("\n") else line + "\n" for line in self.log_tail[-10:]).rstrip()
        return text


class AuthError(PlatformError):
    """Credentials were refused (HTTP 401/403 on login)."""

    default_code = "AUTH_FAILED"


class Locked(PlatformError):
    """The platform is busy with another request (HTTP 423); podrun retries these."""

    default_code = "LOCKED"


class NotFound(PlatformError):
    """A file, pod, image or object does not exist."""

    default_code = "NOT_FOUND"


class InvalidRequest(PlatformError):
    """The request itself is wrong (bad parameter, missing field, size limit)."""

    default_code = "INVALID_REQUEST"


class IllegalPath(InvalidRequest):
    """A path escapes its volume (``..``, absolute host paths, links out)."""

    default_code = "ILLEGAL_PATH"


class Conflict(PlatformError):
    """A conditional write lost a race: the stored version is not the one expected."""

    default_code = "CONFLICT"


class SerializationError(PodrunError, TypeError):
    """A callable, argument or result cannot be pickled or unpickled."""


class IntegrityError(PodrunError):
    """Stored bytes do not match their content hash."""

    def __init__(self, message: str, *, blob: str | None = None) -> None:
        super().__init__(message)
        self.blob = blob


class WireFormatError(PodrunError):
    """A bundle or record file is not in a format this podrun understands."""


class EnvironmentMismatch(PodrunError):
    """The pod's environment cannot load the pickled code (Python version, modules)."""


class PodFailed(PodrunError):
    """The pod ended without writing a result for this call.

    ``state`` is the pod's Kubernetes-style container state, ``status`` the call's terminal
    record status (``KILLED``, ``LOST``, ...).
    """

    def __init__(self, message: str, *, state: dict[str, Any] | None = None, status: str = "LOST") -> None:
        super().__init__(message)
        self.state = state or {}
        self.status = status


class CallTimeout(PodrunError, TimeoutError):
    """A call ran past its own ``timeout`` inside the pod (terminal record ``TIMEOUT``)."""


if sys.version_info >= (3, 11):  # concurrent.futures.TimeoutError is TimeoutError since 3.11
    class _WaitTimeoutBase(PodrunError, TimeoutError):
        pass
else:  # Python 3.10: also what concurrent.futures users catch
    from concurrent.futures import TimeoutError as _FutureTimeout

    class _WaitTimeoutBase(PodrunError, TimeoutError, _FutureTimeout):
        pass


class WaitTimeout(_WaitTimeoutBase):
    """``fut.get(timeout=...)`` waited that long without the call ending. The call itself keeps
    running: ``get()`` again, or re-attach with ``podrun.attach(job_id)``.

    ``waited`` is the timeout in seconds; ``job_id`` is None while the call is not sent yet."""

    def __init__(self, message: str, *, waited: float, job_id: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.waited = waited
        self.job_id = job_id
        self.index = index

    def __str__(self) -> str:
        return str(self.args[0])


class Cancelled(PodrunError):
    """A call was cancelled before it ran (terminal record ``CANCELLED``)."""


class RemoteError(PodrunError):
    """A remote exception whose type could not be re-created here.

    Carries the remote type name, message and formatted traceback.
    """

    def __init__(self, type_name: str, message: str, traceback_text: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}\n\nRemote traceback:\n{self.traceback_text}"


__all__ = [
    "AuthError",
    "CallTimeout",
    "Cancelled",
    "ConfigError",
    "Conflict",
    "EnvironmentMismatch",
    "IllegalPath",
    "IntegrityError",
    "InvalidRequest",
    "Locked",
    "NotFound",
    "PlatformError",
    "PodFailed",
    "PodrunError",
    "RemoteError",
    "SerializationError",
    "WaitTimeout",
    "WireFormatError",
]
