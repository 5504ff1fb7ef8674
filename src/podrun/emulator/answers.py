"""Failures as EM answers: every exception a handler meets becomes ``{"error","message"[,
"log_tail"]}`` with the status the protocol gives its code, client mistakes 4xx and server
faults 5xx, and no host path of the emulator in any message."""

from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.formparsers import MultiPartException
from starlette.responses import JSONResponse

from ..errors import AuthError, Conflict, IllegalPath, InvalidRequest, Locked, NotFound, PlatformError
from ..platform.em_protocol import error_body, status_of
from ..platform.local import default_home

log = logging.getLogger("podrun.emulator")

_CLASS_STATUS: tuple[tuple[type[PlatformError], int], ...] = (
    (IllegalPath, 403),
    (NotFound, 404),
    (InvalidRequest, 400),
    (Locked, 423),
    (AuthError, 401),
    (Conflict, 409),
)
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_BAD_PATH = (errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY, errno.EINVAL)


class Scrubber:
    """Replaces the emulator's host paths in text sent to clients: a volume's folder reads
    ``/clients/<volume>`` (as the EM's own logs name it), anything else of the host ``<host>``."""

    def __init__(self, root: Path) -> None:
        roots = {str(root), os.path.realpath(root)}
        self.volumes = sorted({f"{r}/volumes/" for r in roots}, key=len, reverse=True)
        others = roots | {sys.prefix, sys.base_prefix, os.path.expanduser("~"), str(default_home())}
        others |= {os.environ[name] for name in ("PODRUN_IMAGE_STORE", "TMPDIR") if os.environ.get(name)}
        others |= {str(Path(r).parent) for r in roots}
        self.others = sorted((p for p in others if p and p != "/"), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for prefix in self.volumes:
            while prefix in text:  # <root>/volumes/<user>/<volume>/x -> /clients/<volume>/x
                head, _, rest = text.partition(prefix)
                _user, _, tail = rest.partition("/")
                text = head + "/clients/" + tail
        for prefix in self.others:
            text = text.replace(prefix, "<host>")
        return text


def fail(status: int, code: str, message: str, log_tail: list[str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, log_tail), status_code=status)


def fail_code(code: str, message: str) -> JSONResponse:
    return fail(status_of(code), code, message)


def _platform_answer(exc: PlatformError) -> tuple[int, str, str]:
    code = (
        "INVALID_PARAMETERS"
        if exc.code in (InvalidRequest.default_code, PlatformError.default_code) and isinstance(exc, InvalidRequest)
        else exc.code
    )
    status = exc.status if exc.status and 400 <= exc.status < 600 else None
    if status is None:
        status = next((s for kind, s in _CLASS_STATUS if isinstance(exc, kind)), None) or status_of(code)
    message = f"Illegal path provided: {exc.message}" if isinstance(exc, IllegalPath) else exc.message
    return status, code, message


def error_response(exc: BaseException, scrub: Scrubber) -> JSONResponse:
    """The EM answer for ``exc``; a fault of the emulator itself is logged with its traceback."""
    log_tail: list[str] | None = None
    if isinstance(exc, PlatformError):
        status, code, message = _platform_answer(exc)
        log_tail = [scrub(line) for line in exc.log_tail] or None
    elif isinstance(exc, MultiPartException):
        status, code, message = 400, "BAD_REQUEST", f"malformed multipart body: {exc.message}"
    elif isinstance(exc, OSError) and exc.errno in _FULL:
        status, code, message = 507, "INSUFFICIENT_STORAGE", "the EM's storage is full: delete files or volumes, then try again"
    elif isinstance(exc, OSError) and exc.errno in _BAD_PATH:
        status, code = 400, "INVALID_PATH"
        message = f"Error in path provided: {os.strerror(exc.errno or 0)}"
    elif isinstance(exc, RecursionError):
        status, code, message = 400, "INVALID_PARAMETERS", "Invalid parameters: nested too deeply"
    elif isinstance(exc, ValueError):  # the platform's own checks (names, specs); UnicodeError too
        status, code, message = 400, "INVALID_PARAMETERS", f"Invalid parameters: {exc}"
    else:
        log.error("internal error", exc_info=exc)
        status, code, message = (
            500,
            "INTERNAL_ERROR",
            f"internal error ({type(exc).__name__}); the emulator's log has the details",
        )
    return fail(status, code, scrub(message), log_tail)


def content_disposition(name: str) -> str:
    """``attachment`` with the file's name: plain ``filename="..."`` when it is printable ASCII,
    otherwise an ASCII stand-in plus RFC 6266's ``filename*=UTF-8''...`` first, so that
    clients that split on ``filename=`` still read a usable name."""
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in name) or "download"
    if fallback == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename*=UTF-8''{quote(name.encode('utf-8', 'surrogateescape'), safe='')}; filename=\"{fallback}\""


def json_safe(value: Any) -> Any:
    """A listing's names may hold bytes that are not UTF-8 (a pod made them): as U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value
