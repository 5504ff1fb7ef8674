"""The EM API emulator as an ASGI app (Starlette) on top of LocalPlatform.

It speaks what em-api.md documents, and every variant a real client sends (§8): GET and
POST on the list/status routes, ``pod_name`` or ``pvc_name``, form, multipart or JSON
bodies, query parameters on POSTs, double slashes and optional trailing slashes. Each
authenticated user gets their own LocalPlatform over one shared root, so users never see
each other's volumes, pods or images.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import IllegalPath, InvalidRequest, Locked, NotFound, PlatformError
from ..platform.local import CHUNK, LocalPlatform
from ..platform.paths import clean_relative
from ..platform.types import PodSpec, validate_pod_name
from .auth import TokenError, Tokens, UserStore
from .chaos import ChaosConfig, ChaosMiddleware
from .docs import ROUTE_DOCS, docs_html, openapi

log = logging.getLogger("podrun.emulator")


@dataclass
class EmulatorConfig:
    root: Path
    users: UserStore
    token_lifetime: float = 300.0
    refresh_lifetime: float = 86400.0
    driver: str = "auto"
    max_uplink_bytes: int = 2 * 1000**3
    max_files_per_uplink: int = 10000
    chaos: ChaosConfig = field(default_factory=ChaosConfig)


def _fail(status: int, code: str, message: str, log_tail: list[str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message}
    if log_tail:
        body["log_tail"] = log_tail
    return JSONResponse(body, status_code=status)


def error_response(exc: Exception) -> JSONResponse:
    """podrun's typed errors → the EM API's status codes and ``{"error","message","log_tail"}``."""
    if isinstance(exc, IllegalPath):
        return _fail(403, "ILLEGAL_PATH", f"Illegal path provided: {exc.message}")
    if isinstance(exc, NotFound):
        return _fail(404, exc.code, exc.message)
    if isinstance(exc, InvalidRequest):
        return _fail(400, exc.code if exc.code != InvalidRequest.default_code else "INVALID_PARAMETERS", exc.message, exc.log_tail)
    if isinstance(exc, Locked):
        return _fail(423, "LOCKED", exc.message)
    if isinstance(exc, PlatformError):
        return _fail(500, exc.code, exc.message, exc.log_tail)
    if isinstance(exc, ValueError):
        return _fail(400, "INVALID_PARAMETERS", f"Invalid parameters: {exc}")
    log.exception("unexpected error")
    return _fail(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")


class Emulator:
    """State shared by the handlers: users, tokens and one LocalPlatform per user."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.tokens = Tokens(config.token_lifetime, config.refresh_lifetime)
        self._platforms: dict[str, LocalPlatform] = {}
        self._lock = threading.Lock()

    def platform(self, user: str) -> LocalPlatform:
        with self._lock:
            if user not in self._platforms:
                self._platforms[user] = LocalPlatform(self.config.root, user=user, driver=self.config.driver,
                                                      max_uplink_bytes=self.config.max_uplink_bytes)
            return self._platforms[user]

    def shutdown(self) -> None:
        """Stop every pod this emulator's users have running (pods would outlive it otherwise)."""
        pods = self.config.root / "pods"
        users = {p.name for p in pods.iterdir() if p.is_dir()} if pods.is_dir() else set()
        for user in sorted(users | set(self._platforms)):
            try:
                self.platform(user).shutdown()
            except Exception:  # one user's broken record must not keep the others' pods alive
                log.exception("stopping the pods of %s", user)


# request parsing -----------------------------------------------------------------------------

async def read_params(request: Request) -> dict[str, Any]:
    """Query parameters, then the body's fields over them (JSON object, form or multipart).
    A repeated form field becomes a list."""
    params: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if request.method == "POST":
        if "json" in content_type:
            raw = await request.body()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise InvalidRequest("Invalid parameters: the body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise InvalidRequest("Invalid parameters: the JSON body must be an object")
                params.update(body)
        elif "form" in content_type:
            async with request.form() as form:
                for key in form.keys():
                    values = [v for v in form.getlist(key) if not isinstance(v, UploadFile)]
                    if values:
                        params[key] = values[0] if len(values) == 1 else values
    return params


def volume_of(params: dict[str, Any], user: str) -> str | None:
    """``pod_name`` or ``pvc_name`` (§8.2), empty meaning the default volume; ``<user>-pvc`` too."""
    value = params.get("pod_name") or params.get("pvc_name") or params.get("pvc") or None
    if value is None or value == f"{user}-pvc":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid parameters: pod_name must be a string, not {value!r}")
    return validate_pod_name(value)


def required(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise InvalidRequest(f"Invalid parameters: {name} is required")
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid parameters: {name} must be a string, not {value!r}")
    return value


def _json_field(value: Any, name: str, kind: type) -> Any:
    """A list or dict field that may arrive as JSON text (form bodies) or natively (JSON bodies)."""
    if value is None or value == "":
        return kind()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            if kind is list:
                return [value]
            raise InvalidRequest(f"Invalid parameters: {name} must be a JSON {kind.__name__}") from None
    if kind is list and not isinstance(value, list):
        value = [value]
    if not isinstance(value, kind):
        raise InvalidRequest(f"Invalid parameters: {name} must be a {kind.__name__}, not {value!r}")
    return value


def pod_spec(params: dict[str, Any], pod_name: str | None) -> PodSpec:
    raw_minutes = params.get("max_duration")
    try:
        minutes = float(raw_minutes) if not isinstance(raw_minutes, bool) and raw_minutes not in (None, "") else None
    except (TypeError, ValueError):
        minutes = None
    if minutes is None:
        raise InvalidRequest(f"Invalid parameters: max_duration must be a number of minutes, not {raw_minutes!r}")
    ports = _json_field(params.get("ports"), "ports", list)
    try:
        ports = [int(p) for p in ports]
    except (TypeError, ValueError):
        raise InvalidRequest(f"Invalid parameters: ports must be integers, not {ports!r}") from None
    command = params.get("command")
    if command is not None and not isinstance(command, (str, list)):
        raise InvalidRequest(f"Invalid parameters: command must be a string, not {command!r}")
    return PodSpec(
        image=required(params, "image"),
        node=required(params, "node"),
        max_duration=int(minutes) if minutes.is_integer() else minutes,
        command=command or None,
        args=[str(a) for a in _json_field(params.get("args"), "args", list)],
        envs={str(k): v for k, v in _json_field(params.get("envs"), "envs", dict).items()},
        ports=ports,
        scheduled_time=params.get("scheduled_time") or None,
        pod_name=pod_name,
    )


# handlers -------------------------------------------------------------------------------------

Handler = Callable[[Emulator, Request, str], Awaitable[Response]]


def ok(message: str, data: Any = None, *, with_data: bool = True) -> JSONResponse:
    return JSONResponse({"message": message, "data": data} if with_data else {"message": message})


async def files_uplink(em: Emulator, request: Request, user: str) -> Response:
    limit = em.config.max_uplink_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 1024 * 1024:
        return _fail(400, "MAX_UPLINK_SIZE_EXCEEDED", f"Total upload size exceeds {_human(limit)}")
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        return _fail(400, "NO_FILES", "No files were provided for uplink!")
    async with request.form(max_files=em.config.max_files_per_uplink, max_fields=1000) as form:
        params = {**dict(request.query_params), **{k: v for k, v in form.items() if isinstance(v, str)}}
        uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not uploads:
            return _fail(400, "NO_FILES", "No files were provided for uplink!")
        if sum(f.size or 0 for f in uploads) > limit:
            return _fail(400, "MAX_UPLINK_SIZE_EXCEEDED", f"Total upload size exceeds {_human(limit)}")
        pod_name = volume_of(params, user)
        dest = params.get("dest_path") or ""
        files = [(f.filename or "", f.file) for f in uploads]
        for _, handle in files:
            handle.seek(0)
        result = await run_in_threadpool(em.platform(user).uplink, files, dest, pod_name)
    return ok("Successfully uplinked files", result)


def _human(size: int) -> str:
    return f"{size / 1000**3:g} GB" if size >= 1000**3 else f"{size / 1000**2:g} MB" if size >= 1000**2 else f"{size} bytes"


async def files_list(em: Emulator, request: Request, user: str) -> Response:
    params = await read_params(request)
    entries = await run_in_threadpool(em.platform(user).list_files, volume_of(params, user))
    return ok("Successfully listed files", [e.to_dict() for e in entries])


async def files_downlink(em: Emulator, request: Request, user: str) -> Response:
    params = await read_params(request)
    pod_name = volume_of(params, user)
    path = params.get("filepath") or ""
    if not isinstance(path, str):
        raise InvalidRequest("Error in path provided: filepath must be a string")
    handle = await run_in_threadpool(em.platform(user).open_file, path, pod_name)  # checked once opened
    name = clean_relative(path).rsplit("/", 1)[-1]
    size = os.fstat(handle.fileno()).st_size

    def chunks() -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    return StreamingResponse(chunks(), media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(size)})


async def files_delete(em: Emulator, request: Request, user: str) -> Response:
    params = await read_params(request)
    path = params.get("filepath")
    if not isinstance(path, str) or not path:
        raise InvalidRequest("File delete failed: filepath is required", code="FILE_DELETE_FAILED")
    await run_in_threadpool(em.platform(user).delete, path, volume_of(params, user))
    return ok("File deleted successfully", with_data=False)


async def image_build(em: Emulator, request: Request, user: str) -> Response:
    params = await read_params(request)
    image = params.get("image") or params.get("image_name")  # SPEC0 called it image_name
    await run_in_threadpool(em.platform(user).image_build, required(params, "dockerfile"), required({"image": image}, "image"),
                            params.get("context") or ".", volume_of(params, user))
    return ok("Docker Image built successfully", with_data=False)


async def image_load(em: Emulator, request: Request, user: str) -> Response:
    params = await read_params(request)
    await run_in_threadpool(em.platform(user).image_load, required(params, "tarfile"), required(params, "image"), volume_of(params, user))
    return ok("Tar file loaded successfully", with_data=False)


async def image_list(em: Emulator, request: Request, user: str) -> Response:
    return ok("Successfully loaded list of docker images", await run_in_threadpool(em.platform(user).image_list))


async def pod_run(em: Emulator, request: Request, user: str) -> Response:
    params = await read_params(request)
    spec = pod_spec(params, volume_of(params, user))
    await run_in_threadpool(em.platform(user).run_pod, spec)
    return ok("Docker run scheduled successfully", with_data=False)


async def pod_status(em: Emulator, request: Request, user: str) -> Response:
    params = await read_params(request)
    state = await run_in_threadpool(em.platform(user).pod_status, volume_of(params, user))
    return ok("Successfully fetched DPhi Pod status", {"state": state.to_dict()})


async def nodes_status(em: Emulator, request: Request, user: str) -> Response:
    return ok("Nodes retrieved successfully.", em.platform(user).nodes_status())


async def pvc_list(em: Emulator, request: Request, user: str) -> Response:
    return ok("Successfully listed volumes", await run_in_threadpool(em.platform(user).pvc_list))


async def pvc_delete(em: Emulator, request: Request, user: str) -> Response:
    params = await read_params(request)
    name = params.get("pvc_name") or params.get("pvc") or params.get("pod_name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("Invalid parameters: pvc_name is required")
    await run_in_threadpool(em.platform(user).pvc_delete, name)
    return ok("Volume deleted successfully", with_data=False)


HANDLERS: dict[str, Handler] = {
    "/em/files/uplink": files_uplink,
    "/em/files/list": files_list,
    "/em/files/downlink": files_downlink,
    "/em/files/delete": files_delete,
    "/em/pod/image/build": image_build,
    "/em/pod/image/load": image_load,
    "/em/pod/image/list": image_list,
    "/em/pod/run": pod_run,
    "/em/pod/status": pod_status,
    "/em/nodes/status": nodes_status,
    "/em/pvc/list": pvc_list,
    "/em/pvc/delete": pvc_delete,
}


def _unauthorized(detail: str, code: str | None = None) -> JSONResponse:
    body = {"detail": detail, **({"code": code} if code else {})}
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="api"'})


def authenticated(em: Emulator, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Check the Bearer token, then run the handler with typed errors turned into EM answers."""

    async def endpoint(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("Authentication credentials were not provided.")
        try:
            user = em.tokens.verify(token.strip(), "access")
        except TokenError as exc:
            return _unauthorized(str(exc), "token_not_valid")
        if not em.config.users.exists(user):
            return _unauthorized("User not found", "user_not_found")
        try:
            return await handler(em, request, user)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer; the server stays up
            return error_response(exc)

    return endpoint


async def _credentials(request: Request) -> dict[str, Any]:
    try:
        return await read_params(request)
    except InvalidRequest:
        return {}


def auth_routes(em: Emulator) -> list[Route]:
    async def obtain(request: Request) -> Response:
        params = await _credentials(request)
        missing = {name: ["This field is required."] for name in ("username", "password")
                   if not isinstance(params.get(name), str) or not params.get(name)}
        if missing:
            return JSONResponse(missing, status_code=400)
        if not em.config.users.check(params["username"], params["password"]):
            return JSONResponse({"detail": "No active account found with the given credentials"}, status_code=401)
        return JSONResponse(em.tokens.pair(params["username"]))

    async def refresh(request: Request) -> Response:
        params = await _credentials(request)
        token = params.get("refresh")
        if not isinstance(token, str) or not token:
            return JSONResponse({"refresh": ["This field is required."]}, status_code=400)
        try:
            user = em.tokens.verify(token, "refresh")
        except TokenError as exc:
            return _unauthorized(str(exc), "token_not_valid")
        if not em.config.users.exists(user):
            return _unauthorized("User not found", "user_not_found")
        return JSONResponse({"access": em.tokens.access(user)})

    return [Route("/auth", obtain, methods=["POST"]), Route("/auth/refresh", refresh, methods=["POST"])]


class NormalizePath:
    """``//em//files/list/`` → ``/em/files/list``: the official client concatenated URLs (§1)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = re.sub(r"/{2,}", "/", scope["path"])
            if len(path) > 1 and path.endswith("/"):
                path = path.rstrip("/") or "/"
            scope = {**scope, "path": path}
        await self.app(scope, receive, send)


def create_app(config: EmulatorConfig) -> Any:
    """The ASGI app: routes, auth, path normalisation and (when configured) chaos."""
    em = Emulator(config)
    routes = auth_routes(em)
    for path, handler in HANDLERS.items():
        routes.append(Route(path, authenticated(em, handler), methods=list(ROUTE_DOCS[path]["methods"])))

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi(str(request.base_url).rstrip("/")))

    async def docs(request: Request) -> Response:
        return HTMLResponse(docs_html())

    async def healthz(request: Request) -> Response:
        return JSONResponse({"message": "ok"})

    routes += [Route("/openapi.json", openapi_json), Route("/docs", docs), Route("/healthz", healthz)]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(status, "HTTP_ERROR")
        return _fail(status, code, f"{request.method} {request.url.path}: {getattr(exc, 'detail', exc)}")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(em.shutdown)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.emulator = em
    return NormalizePath(ChaosMiddleware(app, config.chaos))
