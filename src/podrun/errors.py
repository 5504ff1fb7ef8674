"""podrun's typed errors: every exception class podrun raises lives here.

Three families, so that one ``except`` says what the caller means:

* ``UsageError`` -- the caller's input is wrong (fix the call, retrying cannot help);
* ``PlatformError`` -- the platform refused or failed a request;
* ``RemoteFailure`` -- a remote call did not give its result.

The hierarchy::

    PodrunError
    ├── UsageError (ValueError)         bad node, option, pod_name, key, file, state of use
    │   ├── ConfigError                 unknown platform or context, bad configuration file
    │   ├── InvalidKey                  a malformed object key, prefix or ObjectRef
    │   ├── UsageTypeError (TypeError)  an argument of the wrong kind
    │   ├── MissingFile (FileNotFoundError)  a local file to read does not exist
    │   ├── Closed (RuntimeError)       a Runner or Executor used after close/shutdown
    │   └── WheelError                  a ``wheels=`` entry that cannot be shipped
    ├── PlatformError                   the platform's answer (``code``, ``status``)
    │   ├── AuthError
    │   ├── Locked                      busy (423); retried by podrun
    │   ├── NotFound
    │   ├── InvalidRequest              the platform refused the request's content
    │   │   └── IllegalPath
    │   ├── Conflict                    a conditional write lost a race
    │   │   └── NameTaken               another Runner holds the name (fail_if_exists)
    │   ├── ContainerUnavailable        no container engine can run the local pod driver
    │   └── ImageStoreError             the local image store (podman) failed
    │       └── PrepareError            a stock image cannot be made here
    ├── RemoteFailure                   a call ended without its return value
    │   ├── RemoteError                 a remote exception whose type cannot be rebuilt here
    │   ├── PodFailed                   the pod ended without the call's result
    │   ├── PodBusy (TimeoutError)      the pod_name stayed held by other clients' jobs past the wait
    │   ├── CallTimeout (TimeoutError)  the call ran past its own ``timeout`` in the pod
    │   └── Cancelled (concurrent.futures.CancelledError)  skipped at the client's request
    ├── WaitTimeout (TimeoutError)      ``fut.get(timeout=)`` waited that long; the call keeps running
    ├── SerializationError (TypeError)  a callable, argument or result cannot be (un)pickled
    ├── IntegrityError                  stored bytes do not match their content hash
    ├── WriteUnsettled                  an object write stored, its outcome not yet known (not retried)
    ├── WireFormatError                 a bundle or record in an unknown format
    │   └── CodecUnavailable            a frame compressed with a codec this side lacks (zstd)
    ├── EnvironmentMismatch             the pod cannot load the pickled code
    ├── BuildFailed                     a local image build or load failed (becomes BUILD_FAILED)
    └── NoContainerEngine               no docker/podman to build the runtime image

    RemoteTraceback (not raised)        the ``__cause__`` carrying a remote traceback's text

A remote call that raised re-raises the user's own exception type (not a podrun class)
wherever it unpickles; ``RemoteError`` stands in only where it does not. Usage errors keep
the builtin base Python would raise (``ValueError``, ``TypeError``, ``FileNotFoundError``,
``RuntimeError``), so code written against those keeps working.

Not here, on purpose: private control-flow exceptions (the runtime's ``_Stopped``) and the
emulator server's ``TokenError``, which becomes an HTTP answer and never reaches a user.
Importable in a pod: standard library only.
"""

from __future__ import annotations

import concurrent.futures as cf
import sys
from typing import Any


class PodrunError(Exception):
    """Base of every error podrun raises on purpose."""


class UsageError(PodrunError, ValueError):
    """The caller's input is wrong: a bad node, option, pod_name, key or file. The message
    names the value and the fix. A ValueError, so ``except ValueError`` keeps working."""


class ConfigError(UsageError):
    """The configuration is wrong: an unknown platform or context, a bad configuration file,
    a missing setting. A ValueError too, as the checks of ``configure`` always were."""


class InvalidKey(UsageError):
    """An object key, prefix or ObjectRef that is not well formed (checked before any platform call)."""


class UsageTypeError(UsageError, TypeError):
    """An argument of the wrong kind, where Python itself raises TypeError (not a callable,
    an unknown keyword option, a method a service does not offer)."""


class MissingFile(UsageError, FileNotFoundError):
    """A local file podrun was asked to read does not exist (or is not a file)."""


class Closed(UsageError, RuntimeError):
    """A Runner or Executor used after ``close()``/``shutdown()``; a RuntimeError, as
    ``concurrent.futures`` executors raise."""


class WheelError(UsageError):
    """A wheel named in ``wheels=`` cannot be shipped (missing, not a wheel, wrong platform)."""


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
    """A request lost a race: a conditional write found another version stored, or a delete
    found its target rewritten under it again and again (HTTP 409)."""

    default_code = "CONFLICT"


class NameTaken(Conflict):
    """``Runner(name, fail_if_exists=True)``: another Runner holds that name (its marker is in
    the volume); ``holder`` says who (host, pid, since)."""

    default_code = "NAME_TAKEN"

    def __init__(self, message: str, holder: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.holder = dict(holder or {})


class WriteUnsettled(PodrunError):
    """An object write was stored, but whether it stands cannot be told yet: a compaction that
    holds it has not decided (its writer may have died). Not retried, since writing it again
    could apply it twice: read the object first."""


class ContainerUnavailable(PlatformError):
    """No container engine can run a container here; the message says what was tried."""


class ImageStoreError(PlatformError):
    """The local image store or podman failed; the message names the command and its last error line."""


class PrepareError(ImageStoreError):
    """A stock image could not be made here; the message names the step and how to fix it."""


class BuildFailed(PodrunError):
    """A local image build or load failed; LocalPlatform answers it as the EM does
    (``BUILD_FAILED`` / ``IMAGE_LOAD_FAILED``, with ``lines``, host paths already hidden, as the log tail)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("".join(lines[-1:]).strip())
        self.lines = lines


class SerializationError(PodrunError, TypeError):
    """A callable, argument or result cannot be pickled or unpickled."""


class IntegrityError(PodrunError):
    """Stored bytes do not match their content hash."""

    def __init__(self, message: str, *, blob: str | None = None) -> None:
        super().__init__(message)
        self.blob = blob


class WireFormatError(PodrunError):
    """A bundle or record file is not in a format this podrun understands."""


class CodecUnavailable(WireFormatError):
    """A frame is compressed with a codec this side cannot decode (zstd where the zstandard
    package is not installed). A pod answering so reports its codecs; the client re-sends once."""


class EnvironmentMismatch(PodrunError):
    """The pod's environment cannot load the pickled code (Python version, modules)."""


class RemoteFailure(PodrunError):
    """A remote call ended without giving its return value (the pod, the deadline or a
    cancel stopped it, or its exception cannot be rebuilt here)."""


class PodFailed(RemoteFailure):
    """The pod ended without writing a result for this call.

    ``state`` is the pod's Kubernetes-style container state, ``status`` the call's terminal
    record status (``KILLED``, ``LOST``, ...).
    """

    def __init__(self, message: str, *, state: dict[str, Any] | None = None, status: str = "LOST") -> None:
        super().__init__(message)
        self.state = state or {}
        self.status = status


class PodBusy(RemoteFailure, TimeoutError):
    """The pod_name's pod stayed held by other clients' jobs (of another kind) past the wait;
    the call never ran. ``holders`` lists who held it (client, job, since)."""

    def __init__(self, message: str, *, holders: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.holders = holders or []


class CallTimeout(RemoteFailure, TimeoutError):
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


class Cancelled(RemoteFailure, cf.CancelledError):
    """A sent call was cancelled (terminal record ``CANCELLED``): skipped before it ran, or
    interrupted while it ran (then with the remote traceback of where it was, as
    ``__cause__``). A ``concurrent.futures.CancelledError`` too: the future's ``cancel()``
    returned False (the call was already sent, as for a running Future)."""


class NoContainerEngine(PodrunError):
    """No usable docker (with buildx) or podman on this machine (building the runtime image)."""


class RemoteError(RemoteFailure):
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


class RemoteTraceback(Exception):
    """Not raised: chained as ``__cause__`` of a re-raised remote exception, so the remote
    traceback prints under it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\nRemote traceback:\n" + self.text


__all__ = [
    "AuthError",
    "BuildFailed",
    "CallTimeout",
    "Cancelled",
    "Closed",
    "CodecUnavailable",
    "ConfigError",
    "Conflict",
    "ContainerUnavailable",
    "EnvironmentMismatch",
    "IllegalPath",
    "ImageStoreError",
    "IntegrityError",
    "InvalidKey",
    "InvalidRequest",
    "Locked",
    "MissingFile",
    "NameTaken",
    "NoContainerEngine",
    "NotFound",
    "PlatformError",
    "PodFailed",
    "PodBusy",
    "PodrunError",
    "PrepareError",
    "RemoteError",
    "RemoteFailure",
    "RemoteTraceback",
    "SerializationError",
    "UsageError",
    "UsageTypeError",
    "WaitTimeout",
    "WheelError",
    "WireFormatError",
    "WriteUnsettled",
]
