"""The EM API's protocol, defined once: routes, request fields, error codes and statuses,
body shapes and limits. ``platform/em.py`` (the client) and ``emulator/`` (the server and
its /docs) both read it, so the two cannot drift apart.

What the real EM documents (em-api.md §2) is here as it is; what podrun's emulator adds is
marked as an extension and is only used by the client when the server advertises it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import IllegalPath, InvalidRequest
from .paths import clean_relative
from .types import normalize_node, validate_pod_name

# limits ---------------------------------------------------------------------------------------
DEFAULT_MAX_UPLINK = 2 * 1000**3  # "The total size cannot exceed 2GB per API call" (em-api.md §2.1)
MAX_DURATION_MINUTES = 24 * 60  # the longest pod the emulator runs; the real EM states none
MAX_PATH_CHARS = 1024  # a volume path in a request
MAX_NAME_BYTES = 255  # one path component (the kernel's NAME_MAX)
MAX_FIELD_CHARS = 8192  # any other string field
MAX_BODY_BYTES = 1024 * 1024  # a JSON or form body (uplinks are multipart and have their own limit)
MAX_HEADER_BYTES = 16 * 1024  # a request's headers together
MAX_LIST_ITEMS = 1000  # ports, args, envs

# The emulator's extensions, advertised in this response header (comma-separated tokens). A
# client sends the same header to use one; a real EM sends neither, so it never gets them.
EXTENSIONS_HEADER = "X-Podrun-Extensions"
FRACTIONAL_MINUTES = "fractional-minutes"  # max_duration may be a fraction of a minute (tests)

# errors -----------------------------------------------------------------------------------------
# code -> HTTP status. The EM's own codes first (em-api.md §2), then the ones the emulator adds
# for what the EM leaves undocumented. Client mistakes are 4xx, server faults 5xx.
ERROR_STATUS: dict[str, int] = {
    "NO_FILES": 400,
    "MAX_UPLINK_SIZE_EXCEEDED": 400,
    "FILE_DELETE_FAILED": 400,
    "BUILD_FAILED": 400,
    "IMAGE_LOAD_FAILED": 400,
    "INVALID_PARAMETERS": 400,
    "INVALID_PATH": 400,  # "Error in path provided" (downlink, §2.3)
    "BAD_REQUEST": 400,  # not HTTP the server can read (request line, headers, multipart framing)
    "ILLEGAL_PATH": 403,
    "FILE_MISSING": 404,
    "POD_NOT_FOUND": 404,
    "PVC_NOT_FOUND": 404,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "REQUEST_TIMEOUT": 408,
    "REQUEST_TOO_LARGE": 413,
    "HEADERS_TOO_LARGE": 431,
    "LOCKED": 423,
    "INTERNAL_ERROR": 500,
    "INSUFFICIENT_STORAGE": 507,
}
# Statuses worth sending again: busy, and server faults that pass. 507 (the server's disk is
# full) does not pass by itself, and 501 never does.
RETRYABLE_STATUSES = frozenset({423, 500, 502, 503, 504})
AUTH_STATUS = 401  # SimpleJWT's shape: {"detail": ..., "code": ...}


def status_of(code: str) -> int:
    return ERROR_STATUS.get(code, 500)


def error_body(code: str, message: str, log_tail: list[str] | None = None) -> dict[str, Any]:
    """The EM's error shape: ``{"error", "message"[, "log_tail"]}``."""
    body: dict[str, Any] = {"error": code, "message": message}
    if log_tail:
        body["log_tail"] = list(log_tail)
    return body


def auth_error_body(detail: str, code: str | None = None) -> dict[str, Any]:
    """SimpleJWT's 401 shape (``/auth/`` and a refused Bearer token)."""
    return {"detail": detail, **({"code": code} if code else {})}


# routes ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One request field. ``kind`` says how it is read and checked (see :func:`read_field`)."""

    name: str
    kind: str  # str | path | pod_name | image | node | minutes | time | command | args | ports | envs | files
    required: bool = False
    doc: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)  # identity: a route is one object of ROUTES
class Route:
    path: str
    methods: tuple[str, ...]
    summary: str
    fields: tuple[Field, ...]
    success: str  # the success answer's "message"
    example: Any  # a success body, for the docs
    has_data: bool = True  # the success body carries "data"
    documented: bool = True  # in the EM's own spec (pvc routes come from its client only)

    def field_names(self) -> dict[str, Field]:
        """Every accepted name (aliases too) -> its field."""
        return {name: f for f in self.fields for name in (f.name, *f.aliases)}


POD = Field("pod_name", "pod_name", doc="volume (and pod); omitted = the user's default volume", aliases=("pvc_name", "pvc"))

AUTH = Route(
    "/auth/",
    ("POST",),
    "Obtain a JWT pair (form or JSON body). No Bearer header.",
    (Field("username", "str", True), Field("password", "str", True)),
    "",
    {"refresh": "<jwt>", "access": "<jwt>"},
)
AUTH_REFRESH = Route(
    "/auth/refresh",
    ("POST",),
    "Exchange a refresh token for a new access token.",
    (Field("refresh", "str", True, "refresh token from /auth/"),),
    "",
    {"access": "<jwt>"},
)
FILES_UPLINK = Route(
    "/em/files/uplink",
    ("POST",),
    "Upload files (multipart, parts named 'files') into the volume.",
    (
        Field("files", "files", True, "repeated file parts; the part's filename is the stored name"),
        Field("dest_path", "path", doc="folder inside the volume"),
        POD,
    ),
    "Successfully uplinked files",
    {"message": "Successfully uplinked files", "data": {"file_count": 2, "total_size_kb": 0.47}},
)
FILES_LIST = Route(
    "/em/files/list",
    ("GET", "POST"),
    "The volume's file tree (size as string, signed int64 hash).",
    (POD,),
    "Successfully listed files",
    {
        "message": "Successfully listed files",
        "data": [{"type": "file", "name": "a.txt", "size": "5", "time": "2025-11-20-12-31", "hash": -6285199279658827551}],
    },
)
FILES_DOWNLINK = Route(
    "/em/files/downlink",
    ("GET", "POST"),
    "Stream one file; Content-Disposition names it (filename*=UTF-8'' too).",
    (Field("filepath", "path", True, "file inside the volume"), POD),
    "",
    "raw bytes",
)
FILES_DELETE = Route(
    "/em/files/delete",
    ("POST",),
    "Delete a file or a folder (recursively).",
    (Field("filepath", "path", True, "file or folder inside the volume"), POD),
    "File deleted successfully",
    {"message": "File deleted successfully"},
    has_data=False,
)
IMAGE_BUILD = Route(
    "/em/pod/image/build",
    ("POST",),
    "Build an image from a Dockerfile and context in the volume.",
    (
        Field("dockerfile", "path", True),
        Field("image", "image", True, aliases=("image_name",)),
        Field("context", "path", doc="build context folder; default the volume root"),
        POD,
    ),
    "Docker Image built successfully",
    {"message": "Docker Image built successfully"},
    has_data=False,
)
IMAGE_LOAD = Route(
    "/em/pod/image/load",
    ("POST",),
    "Load an image tar (docker save) from the volume.",
    (Field("tarfile", "path", True), Field("image", "image", True), POD),
    "Tar file loaded successfully",
    {"message": "Tar file loaded successfully"},
    has_data=False,
)
IMAGE_LIST = Route(
    "/em/pod/image/list",
    ("GET", "POST"),
    "The user's own built and loaded images.",
    (),
    "Successfully loaded list of docker images",
    {"message": "Successfully loaded list of docker images", "data": []},
)
POD_RUN = Route(
    "/em/pod/run",
    ("POST",),
    "Schedule a pod (replaces a pod of the same pod_name).",
    (
        Field("image", "image", True),
        Field("node", "node", True, "FPGA, GPU or MPU"),
        Field(
            "max_duration",
            "minutes",
            True,
            f"whole minutes, 1 to {MAX_DURATION_MINUTES}; fractions only with the emulator's '{FRACTIONAL_MINUTES}' extension",
        ),
        Field("command", "command", doc="split into argv, no shell"),
        Field("args", "args"),
        Field("envs", "envs"),
        Field("ports", "ports"),
        Field("scheduled_time", "time", doc="ISO-8601 with timezone"),
        POD,
    ),
    "Docker run scheduled successfully",
    {"message": "Docker run scheduled successfully"},
    has_data=False,
)
POD_STATUS = Route(
    "/em/pod/status",
    ("GET", "POST"),
    "The pod's Kubernetes container state; 404 if never run.",
    (POD,),
    "Successfully fetched DPhi Pod status",
    {"message": "Successfully fetched DPhi Pod status", "data": {"state": {"running": {"startedAt": "2025-11-20T12:31:12Z"}}}},
)
NODES_STATUS = Route(
    "/em/nodes/status",
    ("GET", "POST"),
    "Nodes able to schedule a pod.",
    (),
    "Nodes retrieved successfully.",
    {"message": "Nodes retrieved successfully.", "data": [{"name": "fpga", "status": "True"}]},
)
PVC_LIST = Route(
    "/em/pvc/list",
    ("GET", "POST"),
    "The user's volumes (from the EM's client only).",
    (),
    "Successfully listed volumes",
    {"message": "Successfully listed volumes", "data": ["alice-pvc", "pod-a"]},
    documented=False,
)
PVC_DELETE = Route(
    "/em/pvc/delete",
    ("POST",),
    "Delete a volume and everything in it (from the EM's client only).",
    (Field("pvc_name", "str", True, aliases=("pvc", "pod_name")),),
    "Volume deleted successfully",
    {"message": "Volume deleted successfully"},
    has_data=False,
    documented=False,
)

ROUTES: tuple[Route, ...] = (
    AUTH,
    AUTH_REFRESH,
    FILES_UPLINK,
    FILES_LIST,
    FILES_DOWNLINK,
    FILES_DELETE,
    IMAGE_BUILD,
    IMAGE_LOAD,
    IMAGE_LIST,
    POD_RUN,
    POD_STATUS,
    NODES_STATUS,
    PVC_LIST,
    PVC_DELETE,
)


# reading fields -------------------------------------------------------------------------------
def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid parameters: {message}", code="INVALID_PARAMETERS", status=400)


def _text(name: str, value: Any, limit: int = MAX_FIELD_CHARS) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise _invalid(f"{name} is {len(value)} characters long; the limit is {limit}")
    if "\x00" in value:
        raise _invalid(f"{name} contains a NUL character")
    return value


def check_path(name: str, value: Any) -> str:
    """A volume path: a string of at most MAX_PATH_CHARS whose components fit NAME_MAX, staying
    inside the volume (IllegalPath, 403, otherwise). Returns it as sent."""
    if not isinstance(value, str):
        raise InvalidRequest(
            f"Error in path provided: {name} must be a string, not {type(value).__name__}", code="INVALID_PATH", status=400
        )
    if len(value) > MAX_PATH_CHARS:
        raise InvalidRequest(
            f"Error in path provided: {name} is {len(value)} characters long; the limit is {MAX_PATH_CHARS}",
            code="INVALID_PATH",
            status=400,
        )
    relative = clean_relative(value)  # IllegalPath for '..' out of the volume, NUL, backslash
    for part in relative.split("/") if relative else ():
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise InvalidRequest(
                f"Error in path provided: a component of {name} is longer than {MAX_NAME_BYTES} bytes",
                code="INVALID_PATH",
                status=400,
            )
    return value


def check_file_name_length(name: str) -> str:
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise IllegalPath(f"illegal file name: longer than {MAX_NAME_BYTES} bytes")
    return name


def _json_text(name: str, value: Any, kind: type) -> Any:
    """A list or dict that a form body carries as JSON text (a JSON body carries it natively)."""
    if not isinstance(value, str):
        return value
    try:
        return loads(value)
    except InvalidRequest:
        if kind is list:
            return [value]  # a form's single value: ports=80, args=-v
        raise _invalid(f"{name} must be a JSON object") from None


def _minutes(name: str, value: Any, fractional: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _invalid(f"{name} must be a number of minutes, not {type(value).__name__}")
    try:
        minutes = float(value)
    except (ValueError, OverflowError):
        raise _invalid(f"{name} must be a number of minutes, not {value!r}") from None
    if not math.isfinite(minutes) or minutes <= 0 or minutes > MAX_DURATION_MINUTES:
        raise _invalid(f"{name} must be a finite number of minutes above 0 and at most {MAX_DURATION_MINUTES}, not {value!r}")
    if minutes.is_integer():
        return int(minutes)
    if not fractional:
        raise _invalid(
            f"{name} must be a whole number of minutes, not {value!r} (fractions are the emulator's "
            f"'{FRACTIONAL_MINUTES}' extension: send the {EXTENSIONS_HEADER} header)"
        )
    return minutes


def _moment(name: str, text: str) -> str | None:
    """An ISO-8601 timestamp with its timezone, as sent (the platform schedules it)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(f"{name} {text!r} is not an ISO-8601 timestamp (e.g. 2025-05-22T12:10:00+02:00)") from None
    if moment.tzinfo is None:
        raise _invalid(f"{name} {text!r} needs a timezone, e.g. +00:00")
    return text


def _scalar(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise _invalid(f"{name} holds a number that is not finite")
        return str(value)
    return _text(name, value)


_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]{0,254}$")  # Kubernetes' env var names


def read_field(spec: Field, value: Any, *, extensions: frozenset[str] = frozenset()) -> Any:
    """One field's value, checked and typed; InvalidRequest (400) or IllegalPath (403) naming it."""
    name, kind = spec.name, spec.kind
    if kind == "str":
        return _text(name, value)
    if kind == "path":
        return check_path(name, value)
    if kind == "pod_name":
        text = _text(name, value, 256)
        try:
            return validate_pod_name(text) if text else None
        except ValueError as exc:
            raise _invalid(str(exc)) from None
    if kind == "image":
        text = _text(name, value, 512)
        if not text.strip():
            raise _invalid(f"{name} is empty")
        return text
    if kind == "node":
        try:
            return normalize_node(_text(name, value, 64))
        except ValueError as exc:
            raise _invalid(str(exc)) from None
    if kind == "minutes":
        return _minutes(name, value, FRACTIONAL_MINUTES in extensions)
    if kind == "time":
        return _moment(name, _text(name, value, 64))
    if kind == "command":
        if isinstance(value, list):
            if len(value) > MAX_LIST_ITEMS:
                raise _invalid(f"{name} has more than {MAX_LIST_ITEMS} items")
            return [_text(f"{name}[{i}]", item) for i, item in enumerate(value)]
        return _text(name, value) or None
    if kind == "args":
        items = _json_text(name, value, list)
        if not isinstance(items, list):
            items = [items]
        if len(items) > MAX_LIST_ITEMS:
            raise _invalid(f"{name} has more than {MAX_LIST_ITEMS} items")
        return [_scalar(f"{name}[{i}]", item) for i, item in enumerate(items)]
    if kind == "ports":
        items = _json_text(name, value, list)
        if not isinstance(items, list):
            items = [items]
        if len(items) > MAX_LIST_ITEMS:
            raise _invalid(f"{name} has more than {MAX_LIST_ITEMS} items")
        ports = []
        for item in items:
            try:
                port = int(item) if not isinstance(item, (bool, float)) else None
            except (TypeError, ValueError):
                port = None
            if port is None or not 0 < port < 65536:
                raise _invalid(f"{name} must be integers between 1 and 65535, not {item!r}")
            ports.append(port)
        return ports
    if kind == "envs":
        mapping = _json_text(name, value, dict)
        if not isinstance(mapping, dict):
            raise _invalid(f"{name} must be an object of NAME: value, not {type(mapping).__name__}")
        if len(mapping) > MAX_LIST_ITEMS:
            raise _invalid(f"{name} has more than {MAX_LIST_ITEMS} variables")
        envs = {}
        for key, item in mapping.items():
            if not _ENV_NAME.match(key):
                raise _invalid(f"{name}: {key[:80]!r} is not a valid environment variable name")
            envs[key] = _scalar(f"{name}[{key}]", item)
        return envs
    raise AssertionError(f"unknown field kind {kind}")  # a mistake in ROUTES, not in a request


def read_fields(
    route: Route, raw: dict[str, Any], *, extensions: frozenset[str] = frozenset(), skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The route's fields from a request's merged query and body parameters, by canonical
    name. Unknown fields, a field given under two names, a missing required field and a
    value of the wrong type are each a 400 that names the field."""
    accepted = route.field_names()
    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in raw.items():
        spec = accepted.get(key)
        if spec is None:
            known = ", ".join(f.name for f in route.fields) or "no fields"
            raise _invalid(f"unknown field {key[:80]!r}; {route.path} takes {known}")
        if spec.name in skip:
            continue
        if spec.name in given_as and given_as[spec.name] != key:
            raise _invalid(f"{spec.name} given twice (as {given_as[spec.name]!r} and {key!r})")
        given_as[spec.name] = key
        if value is None or value == "":
            continue  # the EM's client sends empty strings for "not given"
        values[spec.name] = read_field(spec, value, extensions=extensions)
    for spec in route.fields:
        if spec.required and spec.name not in values and spec.name not in skip:
            raise _invalid(f"{spec.name} is required")
    return values


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(raw: bytes | str) -> Any:
    """Strict JSON: NaN and Infinity refused, nesting bounded by the interpreter's recursion
    limit; every failure is a 400."""
    try:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        return json.loads(raw, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise _invalid("the body is not UTF-8") from None
    except RecursionError:
        raise _invalid("the JSON body is nested too deeply") from None
    except ValueError as exc:
        raise _invalid(f"the body is not valid JSON ({str(exc)[:120]})") from None


def parse_extensions(header: str | None) -> frozenset[str]:
    return frozenset(t.strip().lower() for t in (header or "").split(",") if t.strip())


__all__ = [
    "DEFAULT_MAX_UPLINK",
    "ERROR_STATUS",
    "EXTENSIONS_HEADER",
    "FRACTIONAL_MINUTES",
    "MAX_DURATION_MINUTES",
    "RETRYABLE_STATUSES",
    "ROUTES",
    "Field",
    "Route",
    "error_body",
    "loads",
    "read_fields",
    "status_of",
]
