"""Reading requests the way a hostile client sends them: bodies bounded while they arrive,
strict JSON and UTF-8, multipart framing checked to its closing boundary, and uplinked bytes
counted as they stream in, so an oversized upload is refused at the limit, not after it was
spooled in full."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from ..errors import InvalidRequest
from ..platform.em_protocol import MAX_BODY_BYTES, loads

MAX_FIELDS = 1000
MAX_PART_HEADER = 8 * 1024  # one header line of a multipart part


class TooLarge(InvalidRequest):
    """A body over its limit (413, or the EM's own MAX_UPLINK_SIZE_EXCEEDED for uplinks)."""


class UplinkTooLarge(MultiPartException):
    """Raised from inside the multipart parser, so that it closes the files it spooled."""


def query_params(request: Request) -> dict[str, Any]:
    """The query string, decoded strictly (a byte that is not UTF-8 is a 400, not U+FFFD)."""
    raw = request.scope.get("query_string", b"")
    try:
        pairs = parse_qsl(
            raw.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest(
            "Invalid parameters: the query string is not UTF-8 text or has too many fields", code="INVALID_PARAMETERS", status=400
        ) from None
    return _merge(pairs)


def _merge(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A repeated field becomes a list."""
    params: dict[str, Any] = {}
    for key, value in pairs:
        if key in params:
            params[key] = [*params[key], value] if isinstance(params[key], list) else [params[key], value]
        else:
            params[key] = value
    return params


async def bounded_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise TooLarge(f"the request body is over {limit} bytes", code="REQUEST_TOO_LARGE", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body is over {limit} bytes", code="REQUEST_TOO_LARGE", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _once(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data


async def read_params(request: Request) -> dict[str, Any]:
    """Query parameters, then the body's fields over them (JSON object, form or multipart
    without files). A repeated form field becomes a list."""
    params = query_params(request)
    if request.method != "POST":
        return params
    raw = await bounded_body(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not raw.strip():
        return params
    if content_type == "application/json" or content_type.endswith("+json"):
        body = loads(raw)
        if not isinstance(body, dict):
            raise InvalidRequest("Invalid parameters: the JSON body must be an object", code="INVALID_PARAMETERS", status=400)
        params.update(body)
    elif content_type == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise InvalidRequest(
                "Invalid parameters: the form body is not UTF-8 or has too many fields", code="INVALID_PARAMETERS", status=400
            ) from None
        params.update(_merge(pairs))
    elif content_type == "multipart/form-data":
        form = await parse_multipart(request, _once(raw), max_files=0)
        params.update(_merge([(k, v) for k, v in form.multi_items() if isinstance(v, str)]))
    else:
        raise InvalidRequest(
            f"Invalid parameters: a body of type {content_type[:60]!r} is not JSON, form or multipart",
            code="INVALID_PARAMETERS",
            status=400,
        )
    return params


class _BoundedParser(MultiPartParser):
    """Starlette's parser, counting file bytes as they arrive and noting the closing boundary."""

    def __init__(self, request: Request, stream: AsyncIterator[bytes], limit: int | None, max_files: int) -> None:
        super().__init__(request.headers, stream, max_files=max_files, max_fields=16, max_part_size=64 * 1024)  # type: ignore[arg-type]
        self.limit = limit
        self.file_bytes = 0
        self.ended = False

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None and self.limit is not None:
            self.file_bytes += end - start
            if self.file_bytes > self.limit:
                raise UplinkTooLarge("over the uplink limit")
        super().on_part_data(data, start, end)

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        super().on_header_field(data, start, end)
        self._check_header()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        super().on_header_value(data, start, end)
        self._check_header()

    def _check_header(self) -> None:
        if len(self._current_partial_header_name) + len(self._current_partial_header_value) > MAX_PART_HEADER:
            raise MultiPartException(f"a part's header is over {MAX_PART_HEADER} bytes")

    def on_end(self) -> None:
        self.ended = True


async def parse_multipart(
    request: Request, stream: AsyncIterator[bytes], *, max_files: int, limit: int | None = None
) -> FormData:
    """A multipart body whose file parts hold at most ``limit`` bytes in all; a malformed or
    truncated body is a MultiPartException (400)."""
    parser = _BoundedParser(request, stream, limit, max_files)
    try:
        form = await parser.parse()
    except FormParserError as exc:
        _close(parser)
        raise MultiPartException(str(exc)[:200]) from None
    except KeyError:  # no Content-Type parameters at all
        raise MultiPartException("the Content-Type has no boundary") from None
    if not parser.ended:
        for value in form.values():
            if isinstance(value, UploadFile):
                await value.close()
        raise MultiPartException("the body ended before its closing boundary")
    return form


def _close(parser: _BoundedParser) -> None:
    for spooled in parser._files_to_close_on_error:
        spooled.close()
