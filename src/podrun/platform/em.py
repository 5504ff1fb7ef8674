"""EMPlatform: the platform contract over DPhi Space's EM API (HTTP, via httpx).

Everything HTTP lives here (layer 2): login and token renewal, the ``/em/...`` routes of
``em_protocol``, error bodies mapped to podrun's typed errors, retries of transient failures
(423, passing 5xx, dropped connections of a server that answered before) with exponential
backoff and jitter inside a deadline, streamed multipart uplinks split under the per-call
size limit, and streamed downlinks. A server that never answered (refused, unresolvable) fails
the first call at once, naming the URL and the cause.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

import httpx
from tenacity import Retrying, retry_if_exception, stop_before_delay, wait_random_exponential

from ..errors import AuthError, ConfigError, Conflict, IllegalPath, InvalidRequest, Locked, NotFound, PlatformError
from . import em_protocol as P
from .base import FileContent, Platform, Progress, UplinkFile, content_size
from .paths import check_file_name, clean_relative
from .types import FileEntry, PodSpec, PodState, validate_pod_name

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
DEFAULT_MAX_UPLINK = P.DEFAULT_MAX_UPLINK
ENV_URL, ENV_USERNAME, ENV_PASSWORD = "PODRUN_EM_URL", "PODRUN_EM_USERNAME", "PODRUN_EM_PASSWORD"
ENV_MAX_UPLINK, ENV_TIMEOUT = "PODRUN_EM_MAX_UPLINK_BYTES", "PODRUN_EM_TIMEOUT"
TRANSIENT_CODES = frozenset({"CONNECTION_FAILED", "TIMEOUT"})  # raised only once the server has answered


class _Secret:
    """Holds the password so that no repr, log line or traceback variable dump shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


class _Unreplayable(PlatformError):
    """A transient failure that cannot be retried: the upload's stream cannot be rewound."""


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _Unreplayable):
        return False
    if isinstance(exc, Locked):
        return True
    if isinstance(exc, PlatformError):
        return exc.code in TRANSIENT_CODES if exc.status is None else exc.status in P.RETRYABLE_STATUSES
    return False


def error_from_response(status: int, body: bytes, route: str) -> PlatformError:
    """Map an EM API error answer (``{"error","message","log_tail"}`` or SimpleJWT's
    ``{"detail"}``, or no JSON at all) to podrun's typed error."""
    code: str | None = None
    message = ""
    log_tail: list[str] = []
    try:
        data = json.loads(body.decode("utf-8", "replace")) if body else {}
    except ValueError:
        data = {}
    if isinstance(data, dict):
        code = data.get("error") if isinstance(data.get("error"), str) else None
        message = str(data.get("message") or data.get("detail") or "")
        if isinstance(data.get("log_tail"), list):
            log_tail = [str(line) for line in data["log_tail"]]
    if not message:
        message = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
    message = f"{route}: {message}"
    kwargs: dict[str, Any] = {"code": code, "status": status, "log_tail": log_tail}
    if status == P.AUTH_STATUS:
        return AuthError(message, **kwargs)
    if status == 403:
        return IllegalPath(message, **kwargs)
    if status == 404:
        return NotFound(message, **kwargs)
    if status == 423:
        return Locked(message, **kwargs)
    if status == 409:
        return Conflict(message, **kwargs)
    if status == 400 and route == P.FILES_DELETE.path and code == "FILE_DELETE_FAILED":
        # The real EM answers a delete of a missing file with 400 "File delete failed"; the
        # client refuses the volume root itself, so what is left is "not there": NotFound.
        return NotFound(message, **kwargs)
    if 400 <= status < 500:
        return InvalidRequest(message, **kwargs)
    return PlatformError(message, **kwargs)


class _Source:
    """One uplinked file: a name and a way to read its bytes again for a retry."""

    def __init__(self, name: str, content: FileContent) -> None:
        self.name = check_file_name(name)
        if any(c in name for c in '"\r\n'):
            raise IllegalPath(f"illegal file name {name!r}: quotes and line breaks cannot travel in a multipart header")
        self.content = content
        self.size = content_size(content)
        self._start: int | None = None
        if not isinstance(content, (bytes, bytearray, memoryview, str, os.PathLike)):
            try:
                self._start = content.tell()
            except (OSError, AttributeError, ValueError):
                self._start = None

    @property
    def replayable(self) -> bool:
        return isinstance(self.content, (bytes, bytearray, memoryview, str, os.PathLike)) or self._start is not None

    def chunks(self) -> Iterator[bytes | memoryview]:
        content = self.content
        if isinstance(content, (bytes, bytearray, memoryview)):
            view = memoryview(content).cast("B")
            for offset in range(0, len(view), CHUNK):
                yield view[offset:offset + CHUNK]
            return
        if isinstance(content, (str, os.PathLike)):
            with open(content, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk
            return
        if self._start is not None:
            content.seek(self._start)
        while chunk := content.read(CHUNK):
            yield chunk


class _MultipartBody:
    """A multipart/form-data body produced chunk by chunk: memory stays at one chunk
    whatever the files weigh; a fresh iteration replays it for a retry."""

    def __init__(self, fields: dict[str, str], sources: list[_Source], progress: Progress | None) -> None:
        self.boundary = "podrun-" + secrets.token_hex(16)
        self.fields = fields
        self.sources = sources
        self.progress = progress
        self.iterations = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _field_head(self, name: str) -> bytes:
        return f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()

    def _file_head(self, source: _Source) -> bytes:
        return (f'--{self.boundary}\r\nContent-Disposition: form-data; name="files"; filename="{source.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode()

    def length(self) -> int | None:
        if any(s.size is None for s in self.sources):
            return None
        total = sum(len(self._field_head(k)) + len(v.encode()) + 2 for k, v in self.fields.items())
        total += sum(len(self._file_head(s)) + (s.size or 0) + 2 for s in self.sources)
        return total + len(f"--{self.boundary}--\r\n")

    def __iter__(self) -> Iterator[bytes]:
        if self.iterations and not all(s.replayable for s in self.sources):
            raise _Unreplayable("the uplink failed midway and one of its streams cannot be rewound to send it again",
                                code="UPLINK_NOT_REPLAYABLE")
        self.iterations += 1
        for name, value in self.fields.items():
            yield self._field_head(name) + value.encode() + b"\r\n"
        for source in self.sources:
            yield self._file_head(source)
            for chunk in source.chunks():
                yield bytes(chunk)
                if self.progress:
                    self.progress(len(chunk))
            yield b"\r\n"
        yield f"--{self.boundary}--\r\n".encode()


def plan_uplink_groups(sources: list[_Source], limit: int) -> list[list[_Source]]:
    """Split files into calls of at most ``limit`` bytes each, in order; a file alone over
    the limit is refused (it could never be sent), a stream of unknown size goes alone."""
    groups: list[list[_Source]] = []
    current: list[_Source] = []
    size = 0
    for source in sources:
        if source.size is not None and source.size > limit:
            raise InvalidRequest(
                f"file {source.name!r} is {source.size} bytes, over this EM's {limit}-byte uplink limit per call; "
                "split it into smaller files", code="MAX_UPLINK_SIZE_EXCEEDED")
        if source.size is None:
            if current:
                groups.append(current)
            groups.append([source])
            current, size = [], 0
            continue
        if current and size + source.size > limit:
            groups.append(current)
            current, size = [], 0
        current.append(source)
        size += source.size
    if current:
        groups.append(current)
    return groups


def run_body(spec: PodSpec, fractional: bool = False) -> dict[str, Any]:
    """``/em/pod/run``'s JSON body. The EM takes whole minutes: ``max_duration`` travels as an
    int, a fraction rounded up, unless ``fractional`` (the server advertised the emulator's
    fractional-minutes extension, which tests use)."""
    minutes = float(spec.max_duration)
    return {
        "image": spec.image,
        "node": spec.node,
        "max_duration": int(minutes) if minutes.is_integer() else minutes if fractional else math.ceil(minutes),
        "scheduled_time": spec.scheduled_iso(),
        "command": spec.command,
        "pod_name": spec.pod_name,
        "ports": list(spec.ports) or None,
        "envs": dict(spec.envs) or None,
        "args": [str(a) for a in spec.args] or None,
    }


class EMPlatform(Platform):
    """The EM API as a Platform. ``url`` is the backend's base URL (e.g. ``http://192.168.3.3``)."""

    kind = "em"

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        max_uplink_bytes: int | None = None,
        timeout: float = 60.0,
        retry_deadline: float = 120.0,
        backoff: tuple[float, float] = (0.05, 5.0),
        poll_interval: tuple[float, float] = (0.05, 2.0),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url or not url.startswith(("http://", "https://")):
            raise ConfigError(f"EM url {url!r} must start with http:// or https://")
        if not username:
            raise ConfigError("EM username is empty")
        self.url = url.rstrip("/")
        self.username = username
        self._password = _Secret(password)
        self.max_uplink_bytes = int(max_uplink_bytes) if max_uplink_bytes else DEFAULT_MAX_UPLINK
        if self.max_uplink_bytes <= 0:
            raise ConfigError("max_uplink_bytes must be positive")
        self.timeout = float(timeout)
        self.retry_deadline = float(retry_deadline)
        self.backoff = backoff
        self.poll_interval = poll_interval
        self._token: str | None = None
        self._token_lock = threading.Lock()
        self._answered = False  # the server answered once: from then on a broken connection is transient
        self.extensions: frozenset[str] = frozenset()  # what the server advertises (the emulator's, never a real EM's)
        self._http = httpx.Client(
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 15.0)),
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def from_settings(
        cls,
        url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        max_uplink_bytes: int | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> EMPlatform:
        """Explicit settings win; otherwise ``PODRUN_EM_URL``, ``PODRUN_EM_USERNAME``,
        ``PODRUN_EM_PASSWORD`` (and optionally ``PODRUN_EM_MAX_UPLINK_BYTES``, ``PODRUN_EM_TIMEOUT``)."""
        url = url or os.environ.get(ENV_URL)
        username = username or os.environ.get(ENV_USERNAME)
        password = password if password is not None else os.environ.get(ENV_PASSWORD)
        settings = ((url, ENV_URL, "url"), (username, ENV_USERNAME, "username"), (password, ENV_PASSWORD, "password"))
        for value, variable, option in settings:
            if not value:
                raise ConfigError(
                    f"the EM platform needs its {option}: pass podrun.configure(platform='em', {option}=...) or set {variable}")
        if max_uplink_bytes is None and os.environ.get(ENV_MAX_UPLINK):
            max_uplink_bytes = int(os.environ[ENV_MAX_UPLINK])
        if timeout is None and os.environ.get(ENV_TIMEOUT):
            timeout = float(os.environ[ENV_TIMEOUT])
        if timeout is not None:
            options["timeout"] = timeout
        return cls(url, username, password, max_uplink_bytes=max_uplink_bytes, **options)  # type: ignore[arg-type]

    def identity(self) -> str:
        return f"em:{self.url}:{self.username}"

    def __repr__(self) -> str:
        return f"EMPlatform(url={self.url!r}, username={self.username!r})"

    def close(self) -> None:
        self._http.close()

    # transport -------------------------------------------------------------------------------
    def _transport_error(self, exc: httpx.TransportError, route: str) -> PlatformError:
        """A server that never answered is unreachable (no retry: a wrong URL does not heal);
        one that did answer before had a transient fault."""
        if not self._answered and isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            cause = str(exc) or type(exc).__name__
            return PlatformError(f"cannot reach the EM at {self.url}: {cause}; check the URL (url= or {ENV_URL}) and that the "
                                 "server is up", code="UNREACHABLE")
        if isinstance(exc, httpx.TimeoutException):
            return PlatformError(f"{route} timed out after {self.timeout}s ({type(exc).__name__})", code="TIMEOUT")
        return PlatformError(f"{route}: connection to {self.url} failed ({type(exc).__name__}: {exc})", code="CONNECTION_FAILED")

    def _answer(self, response: httpx.Response) -> httpx.Response:
        self._answered = True
        advertised = response.headers.get(P.EXTENSIONS_HEADER)
        if advertised is not None:
            self.extensions = P.parse_extensions(advertised)
        return response

    def _login(self) -> str:
        """``POST /auth/`` with form credentials; the access token or AuthError."""
        try:
            response = self._answer(self._http.post(f"{self.url}{P.AUTH.path}",
                                                    data={"username": self.username, "password": self._password.reveal()}))
        except httpx.TransportError as exc:
            raise self._transport_error(exc, "login") from None
        if response.status_code == 200:
            try:
                token = response.json()["access"]
            except (ValueError, KeyError, TypeError):
                raise PlatformError(f"{self.url}{P.AUTH.path} answered 200 without an access token", code="BAD_RESPONSE",
                                    status=200) from None
            return str(token)
        if response.status_code in (400, 401, 403):
            raise AuthError(f"login as {self.username!r} at {self.url} was refused (HTTP {response.status_code})",
                            status=response.status_code)
        raise error_from_response(response.status_code, response.content, P.AUTH.path)

    def _auth_header(self, renew: bool = False, stale: str | None = None) -> dict[str, str]:
        with self._token_lock:
            if self._token is None or (renew and self._token == stale):
                self._token = self._login()
            return {"Authorization": f"Bearer {self._token}"}

    def _call(self, send: Callable[[dict[str, str]], httpx.Response], route: str) -> httpx.Response:
        """One attempt: send with the current token, on 401 log in again and send once more.
        Non-2xx answers become typed errors (the response is closed)."""
        headers = self._auth_header()
        try:
            response = self._answer(send(headers))
            if response.status_code == P.AUTH_STATUS:
                response.close()
                stale = headers["Authorization"].split(" ", 1)[1]
                response = self._answer(send(self._auth_header(renew=True, stale=stale)))
        except httpx.TransportError as exc:
            raise self._transport_error(exc, route) from None
        if response.status_code >= 300:
            body = response.read()
            response.close()
            raise error_from_response(response.status_code, body, route)
        return response

    def _retrying(self, attempt: Callable[[], Any]) -> Any:
        """Run ``attempt`` again on transient failures, backing off, until the deadline."""
        retrying = Retrying(
            stop=stop_before_delay(self.retry_deadline),
            wait=wait_random_exponential(multiplier=self.backoff[0], max=self.backoff[1]),  # full jitter
            retry=retry_if_exception(_is_transient),
            reraise=True,
            before_sleep=lambda state: log.info("EM call failed (%s), retry %d", state.outcome and state.outcome.exception(),
                                                state.attempt_number),
        )
        return retrying(attempt)

    def _json(self, endpoint: P.Route, *, method: str | None = None, params: dict[str, Any] | None = None,
              body: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
              acted: Callable[[], bool] | None = None) -> dict[str, Any]:
        """One call of ``endpoint`` (its first method unless told), retried on transient failures;
        its JSON answer. With ``acted``, a re-send first asks it whether the lost answer's call
        took effect, and stops there if so."""
        method = method or endpoint.methods[0]
        route = endpoint.path
        sent = False
        params = {k: v for k, v in (params or {}).items() if v is not None} or None
        body = {k: v for k, v in (body or {}).items() if v is not None}
        extra = headers or {}

        def send(auth: dict[str, str]) -> httpx.Response:
            if method == "GET":
                return self._http.get(self.url + route, params=params, headers={**auth, **extra})
            return self._http.post(self.url + route, params=params, json=body, headers={**auth, **extra})

        def attempt() -> dict[str, Any]:
            nonlocal sent
            if sent and acted is not None and acted():
                log.info("%s: the answer was lost but the call took effect; not sent again", route)
                return {}
            sent = True
            response = self._call(send, route)
            try:
                data = response.json()
            except ValueError:
                raise PlatformError(f"{route} answered {response.status_code} with a body that is not JSON", code="BAD_RESPONSE",
                                    status=response.status_code) from None
            if not isinstance(data, dict):
                raise PlatformError(f"{route} answered with {type(data).__name__}, not an object", code="BAD_RESPONSE")
            return data

        return self._retrying(attempt)

    # files -----------------------------------------------------------------------------------
    def uplink(self, files: Sequence[UplinkFile], dest_path: str = "", pod_name: str | None = None,
               progress: Progress | None = None) -> dict[str, Any]:
        validate_pod_name(pod_name)
        sources = [_Source(name, content) for name, content in files]
        groups = plan_uplink_groups(sources, self.max_uplink_bytes) or [[]]
        total = {"file_count": 0, "total_size_kb": 0.0}
        for group in groups:
            data = self._uplink_call(group, dest_path, pod_name, progress).get("data") or {}
            total["file_count"] += int(data.get("file_count", len(group)))
            total["total_size_kb"] += float(data.get("total_size_kb", 0))
        total["total_size_kb"] = round(total["total_size_kb"], 2)
        return total

    def _uplink_call(self, group: list[_Source], dest_path: str, pod_name: str | None,
                     progress: Progress | None) -> dict[str, Any]:
        fields = {"dest_path": dest_path or ""}
        if pod_name is not None:
            fields["pod_name"] = pod_name
        body = _MultipartBody(fields, group, progress)
        headers_extra = {"Content-Type": body.content_type}
        length = body.length()
        if length is not None:
            headers_extra["Content-Length"] = str(length)
        read = max(self.timeout, 7200.0) if length and length > 100 * CHUNK else self.timeout
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 15.0), read=read)

        def send(headers: dict[str, str]) -> httpx.Response:
            return self._http.post(f"{self.url}{P.FILES_UPLINK.path}", content=iter(body), headers={**headers, **headers_extra},
                                   timeout=timeout)

        def attempt() -> dict[str, Any]:
            return self._call(send, P.FILES_UPLINK.path).json()

        return self._retrying(attempt)

    def downlink_into(self, path: str, sink: BinaryIO, pod_name: str | None = None, progress: Progress | None = None) -> int:
        validate_pod_name(pod_name)
        params = {"filepath": path, **({"pod_name": pod_name} if pod_name is not None else {})}
        route = P.FILES_DOWNLINK.path
        try:
            start: int | None = sink.tell()
        except (OSError, AttributeError, ValueError):
            start = None
        written = [0]

        def send(headers: dict[str, str]) -> httpx.Response:
            request = self._http.build_request("GET", self.url + route, params=params, headers=headers)
            return self._http.send(request, stream=True)

        def attempt() -> int:
            if written[0]:
                if start is None:
                    raise _Unreplayable("the downlink broke midway and its sink cannot be rewound",
                                        code="DOWNLINK_NOT_REPLAYABLE")
                sink.seek(start)
                sink.truncate()
                written[0] = 0
            response = self._call(send, route)
            try:
                for chunk in response.iter_bytes(CHUNK):
                    sink.write(chunk)
                    written[0] += len(chunk)
                    if progress:
                        progress(len(chunk))
            except httpx.TransportError as exc:
                raise PlatformError(f"{route}: the download of {path!r} broke after {written[0]} bytes ({type(exc).__name__})",
                                    code="CONNECTION_FAILED") from None
            finally:
                response.close()
            expected = response.headers.get("Content-Length")
            if expected is not None and expected.isdigit() and int(expected) != written[0]:
                raise PlatformError(f"{route}: {path!r} arrived with {written[0]} of {expected} bytes", code="CONNECTION_FAILED")
            return written[0]

        return self._retrying(attempt)

    def list_files(self, pod_name: str | None = None) -> list[FileEntry]:
        validate_pod_name(pod_name)
        data = self._json(P.FILES_LIST, params={"pod_name": pod_name}).get("data") or []
        return [FileEntry.from_dict(item) for item in data]

    def delete(self, path: str, pod_name: str | None = None) -> None:
        validate_pod_name(pod_name)
        if not clean_relative(path):
            raise InvalidRequest("File delete failed: give a file or folder inside the volume, not its root",
                                 code="FILE_DELETE_FAILED")
        self._json(P.FILES_DELETE, body={"filepath": path, "pod_name": pod_name})

    # images ----------------------------------------------------------------------------------
    def image_build(self, dockerfile: str, image: str, context: str = ".", pod_name: str | None = None) -> None:
        validate_pod_name(pod_name)
        self._json(P.IMAGE_BUILD, body={"dockerfile": dockerfile, "image": image, "context": context, "pod_name": pod_name})

    def image_load(self, tarfile: str, image: str, pod_name: str | None = None) -> None:
        validate_pod_name(pod_name)
        self._json(P.IMAGE_LOAD, body={"tarfile": tarfile, "image": image, "pod_name": pod_name})

    def image_list(self) -> list[dict[str, Any]]:
        return list(self._json(P.IMAGE_LIST).get("data") or [])

    # pods ------------------------------------------------------------------------------------
    def run_pod(self, spec: PodSpec) -> None:
        body, headers = self._run_request(spec)
        self._json(P.POD_RUN, body=body, headers=headers)

    def _run_request(self, spec: PodSpec) -> tuple[dict[str, Any], dict[str, str] | None]:
        """``/em/pod/run``'s body and extra headers: a fractional ``max_duration`` only to a
        server that advertised the extension (so logged in first), whole minutes otherwise."""
        self._retrying(self._auth_header)
        whole = float(spec.max_duration).is_integer()
        fractional = not whole and P.FRACTIONAL_MINUTES in self.extensions
        if not whole and not fractional:
            log.warning("max_duration=%s: the EM takes whole minutes; sending %d", spec.max_duration,
                        math.ceil(spec.max_duration))
        return run_body(spec, fractional), ({P.EXTENSIONS_HEADER: P.FRACTIONAL_MINUTES} if fractional else None)

    def run_pod_at_most_once(self, spec: PodSpec, started: Callable[[], bool]) -> None:
        body, headers = self._run_request(spec)
        self._json(P.POD_RUN, body=body, headers=headers, acted=started)

    def pod_status(self, pod_name: str | None = None) -> PodState:
        validate_pod_name(pod_name)
        data = self._json(P.POD_STATUS, params={"pod_name": pod_name}).get("data") or {}
        try:
            return PodState(data["state"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PlatformError(f"{P.POD_STATUS.path} answered an unreadable state {data!r}: {exc}",
                                code="BAD_RESPONSE") from None

    def nodes_status(self) -> list[dict[str, str]]:
        return [{"name": str(n["name"]), "status": str(n["status"])} for n in self._json(P.NODES_STATUS).get("data") or []]

    # volumes ---------------------------------------------------------------------------------
    def pvc_list(self) -> list[str]:
        data = self._json(P.PVC_LIST, method="POST").get("data") or []
        return [str(item["name"]) if isinstance(item, dict) else str(item) for item in data]

    def default_volume(self) -> str | None:
        return f"{self.username}-pvc"

    def pvc_delete(self, pvc_name: str) -> None:
        self._json(P.PVC_DELETE, body={"pvc_name": pvc_name})


__all__ = ["EMPlatform", "error_from_response", "plan_uplink_groups", "run_body"]
