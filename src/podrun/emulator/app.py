"""The EM API emulator as an ASGI app (Starlette) on top of LocalPlatform.

It speaks the protocol of ``platform/em_protocol.py`` and every variant a real client sends
(em-api.md §8): GET and POST on the list/status routes, ``pod_name`` or ``pvc_name``, form,
multipart or JSON bodies, query parameters on POSTs, double slashes and optional trailing
slashes. Each authenticated user gets their own LocalPlatform over one shared root, so users
never see each other's volumes, pods or images. Every tenant is treated as hostile: fields are
checked against the route table, bodies are bounded, and failures never carry a host path.
"""

from __future__ import annotations

import contextlib
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
from starlette.routing import Route as StarletteRoute

from ..errors import InvalidRequest, NotFound
from ..platform import em_protocol as P
from ..platform.local import CHUNK, LocalPlatform
from ..platform.paths import check_file_name, clean_relative
from ..platform.types import PodSpec
from .answers import Scrubber, content_disposition, error_response, fail, fail_code, json_safe
from .auth import TokenError, Tokens, UserStore
from .busy import BusyUsers
from .chaos import ChaosConfig, ChaosMiddleware
from .docs import docs_html, openapi
from .requests import TooLarge, UplinkTooLarge, parse_multipart, query_params, read_params

log = logging.getLogger("podrun.emulator")
ADVERTISED = P.FRACTIONAL_MINUTES


@dataclass
class EmulatorConfig:
    root: Path
    users: UserStore
    token_lifetime: float = 300.0
    refresh_lifetime: float = 86400.0
    driver: str = "auto"
    max_uplink_bytes: int = P.DEFAULT_MAX_UPLINK
    max_files_per_uplink: int = 10000
    busy_lock: bool = True  # a user's concurrent calls get 423 LOCKED, as on the EM
    token_secret: str | None = None  # signs tokens; random (tokens die with the process) unless given
    chaos: ChaosConfig = field(default_factory=ChaosConfig)


class Emulator:
    """State shared by the handlers: users, tokens and one LocalPlatform per user."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.tokens = Tokens(config.token_lifetime, config.refresh_lifetime)
        if config.token_secret:
            self.tokens.secret = config.token_secret
        self.scrub = Scrubber(config.root)
        self.busy = BusyUsers(config.busy_lock)
        self._platforms: dict[str, LocalPlatform] = {}
        self._lock = threading.Lock()

    def platform(self, user: str) -> LocalPlatform:
        with self._lock:
            if user not in self._platforms:
                self._platforms[user] = LocalPlatform(
                    self.config.root, user=user, driver=self.config.driver, max_uplink_bytes=self.config.max_uplink_bytes
                )
            return self._platforms[user]

    def volume_exists(self, user: str, pod_name: str | None) -> bool:
        """Reads of a volume never used must not create it (listing a new pod_name creates nothing)."""
        return self.platform(user).volume_path(pod_name, create=False).is_dir()

    def shutdown(self) -> None:
        """Stop every pod this emulator's users have running (pods would outlive it otherwise)."""
        pods = self.config.root / "pods"
        users = {p.name for p in pods.iterdir() if p.is_dir()} if pods.is_dir() else set()
        for user in sorted(users | set(self._platforms)):
            try:
                self.platform(user).shutdown()
            except Exception:  # one user's broken record must not keep the others' pods alive
                log.exception("stopping the pods of %s", user)


# request fields --------------------------------------------------------------------------------


def _extensions(request: Request) -> frozenset[str]:
    return P.parse_extensions(request.headers.get(P.EXTENSIONS_HEADER)) & {ADVERTISED}


def _own_default(params: dict[str, Any], user: str) -> dict[str, Any]:
    """``<user>-pvc`` names the default volume (the EM's PVC name for it)."""
    return {k: (None if k in ("pod_name", "pvc_name", "pvc") and v == f"{user}-pvc" else v) for k, v in params.items()}


async def fields_of(request: Request, route: P.Route, user: str, own_default: bool = True) -> dict[str, Any]:
    params = await read_params(request)
    return P.read_fields(route, _own_default(params, user) if own_default else params, extensions=_extensions(request))


# handlers -------------------------------------------------------------------------------------

Handler = Callable[["Emulator", Request, str], Awaitable[Response]]


def ok(route: P.Route, data: Any = None) -> JSONResponse:
    return JSONResponse({"message": route.success, "data": json_safe(data)} if route.has_data else {"message": route.success})


def _too_big(limit: int) -> JSONResponse:
    return fail_code("MAX_UPLINK_SIZE_EXCEEDED", f"Total upload size exceeds {_human(limit)}")


def _human(size: int) -> str:
    return f"{size / 1000**3:g} GB" if size >= 1000**3 else f"{size / 1000**2:g} MB" if size >= 1000**2 else f"{size} bytes"


async def files_uplink(em: Emulator, request: Request, user: str) -> Response:
    route, limit = P.FILES_UPLINK, em.config.max_uplink_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 1024 * 1024:
        return _too_big(limit)
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        return fail_code("NO_FILES", "No files were provided for uplink!")
    try:
        form = await parse_multipart(request, request.stream(), max_files=em.config.max_files_per_uplink, limit=limit)
    except UplinkTooLarge:
        return _too_big(limit)
    try:
        raw = {**query_params(request), **{k: v for k, v in form.multi_items() if isinstance(v, str)}}
        uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        strays = [k for k, v in form.multi_items() if isinstance(v, UploadFile) and k != "files"]
        if not uploads:
            return fail_code("NO_FILES", "No files were provided for uplink!")
        if strays:
            raise InvalidRequest(
                f"Invalid parameters: file parts must be named 'files', not {strays[0][:80]!r}",
                code="INVALID_PARAMETERS",
                status=400,
            )
        fields = P.read_fields(route, _own_default(raw, user), skip=("files",))
        files = []
        for upload in uploads:
            name = P.check_file_name_length(check_file_name(upload.filename or ""))
            upload.file.seek(0)
            files.append((name, upload.file))
        result = await run_in_threadpool(em.platform(user).uplink, files, fields.get("dest_path") or "", fields.get("pod_name"))
    finally:
        await form.close()
    return ok(route, result)


async def files_list(em: Emulator, request: Request, user: str) -> Response:
    pod_name = (await fields_of(request, P.FILES_LIST, user)).get("pod_name")
    if not em.volume_exists(user, pod_name):
        return ok(P.FILES_LIST, [])
    entries = await run_in_threadpool(em.platform(user).list_files, pod_name)
    return ok(P.FILES_LIST, [e.to_dict() for e in entries])


async def files_downlink(em: Emulator, request: Request, user: str) -> Response:
    fields = await fields_of(request, P.FILES_DOWNLINK, user)
    path, pod_name = fields["filepath"], fields.get("pod_name")
    if not em.volume_exists(user, pod_name):
        raise NotFound(f"File missing: {path!r} is not a file in this volume", code="FILE_MISSING", status=404)
    handle = await run_in_threadpool(em.platform(user).open_file, path, pod_name)  # checked once opened
    size = os.fstat(handle.fileno()).st_size

    def chunks() -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    name = clean_relative(path).rsplit("/", 1)[-1]
    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={"Content-Disposition": content_disposition(name), "Content-Length": str(size)},
    )


async def files_delete(em: Emulator, request: Request, user: str) -> Response:
    fields = await fields_of(request, P.FILES_DELETE, user)
    path, pod_name = fields["filepath"], fields.get("pod_name")
    if not em.volume_exists(user, pod_name):
        raise InvalidRequest(f"File delete failed: {path!r} does not exist in this volume", code="FILE_DELETE_FAILED", status=400)
    await run_in_threadpool(em.platform(user).delete, path, pod_name)
    return ok(P.FILES_DELETE)


async def image_build(em: Emulator, request: Request, user: str) -> Response:
    fields = await fields_of(request, P.IMAGE_BUILD, user)
    await run_in_threadpool(
        em.platform(user).image_build, fields["dockerfile"], fields["image"], fields.get("context") or ".", fields.get("pod_name")
    )
    return ok(P.IMAGE_BUILD)


async def image_load(em: Emulator, request: Request, user: str) -> Response:
    fields = await fields_of(request, P.IMAGE_LOAD, user)
    await run_in_threadpool(em.platform(user).image_load, fields["tarfile"], fields["image"], fields.get("pod_name"))
    return ok(P.IMAGE_LOAD)


async def image_list(em: Emulator, request: Request, user: str) -> Response:
    await fields_of(request, P.IMAGE_LIST, user)
    return ok(P.IMAGE_LIST, await run_in_threadpool(em.platform(user).image_list))


async def pod_run(em: Emulator, request: Request, user: str) -> Response:
    f = await fields_of(request, P.POD_RUN, user)
    spec = PodSpec(
        image=f["image"],
        node=f["node"],
        max_duration=f["max_duration"],
        command=f.get("command"),
        args=f.get("args", []),
        envs=f.get("envs", {}),
        ports=f.get("ports", []),
        scheduled_time=f.get("scheduled_time"),
        pod_name=f.get("pod_name"),
    )
    await run_in_threadpool(em.platform(user).run_pod, spec)
    return ok(P.POD_RUN)


async def pod_status(em: Emulator, request: Request, user: str) -> Response:
    pod_name = (await fields_of(request, P.POD_STATUS, user)).get("pod_name")
    state = await run_in_threadpool(em.platform(user).pod_status, pod_name)
    return ok(P.POD_STATUS, {"state": state.to_dict()})


async def nodes_status(em: Emulator, request: Request, user: str) -> Response:
    await fields_of(request, P.NODES_STATUS, user)
    return ok(P.NODES_STATUS, em.platform(user).nodes_status())


async def pvc_list(em: Emulator, request: Request, user: str) -> Response:
    await fields_of(request, P.PVC_LIST, user)
    return ok(P.PVC_LIST, await run_in_threadpool(em.platform(user).pvc_list))


async def pvc_delete(em: Emulator, request: Request, user: str) -> Response:
    name = (await fields_of(request, P.PVC_DELETE, user, own_default=False))["pvc_name"]
    await run_in_threadpool(em.platform(user).pvc_delete, name)
    return ok(P.PVC_DELETE)


HANDLERS: dict[P.Route, Handler] = {
    P.FILES_UPLINK: files_uplink,
    P.FILES_LIST: files_list,
    P.FILES_DOWNLINK: files_downlink,
    P.FILES_DELETE: files_delete,
    P.IMAGE_BUILD: image_build,
    P.IMAGE_LOAD: image_load,
    P.IMAGE_LIST: image_list,
    P.POD_RUN: pod_run,
    P.POD_STATUS: pod_status,
    P.NODES_STATUS: nodes_status,
    P.PVC_LIST: pvc_list,
    P.PVC_DELETE: pvc_delete,
}


def _unauthorized(detail: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        P.auth_error_body(detail, code), status_code=P.AUTH_STATUS, headers={"WWW-Authenticate": 'Bearer realm="api"'}
    )


def authenticated(em: Emulator, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Check the Bearer token, hold the user's busy lock, then run the handler with every
    failure turned into an EM answer."""

    async def endpoint(request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("Authentication credentials were not provided.")
        try:
            user = em.tokens.verify(token.strip(), "access")
        except TokenError as exc:
            return _unauthorized(str(exc), "token_not_valid")
        if not em.config.users.exists(user):
            return _unauthorized("User not found", "user_not_found")
        with em.busy.hold(user) as free:
            if not free:
                return fail_code("LOCKED", "CG2 is busy with another request of this user; try again")
            try:
                return await handler(em, request, user)
            except TooLarge as exc:
                return fail(exc.status or 413, exc.code, exc.message)
            except Exception as exc:  # noqa: BLE001 - every failure becomes an answer; the server stays up
                return error_response(exc, em.scrub)

    return endpoint


async def _credentials(request: Request) -> dict[str, Any]:
    try:
        return await read_params(request)
    except (InvalidRequest, ValueError, RecursionError):
        return {}


def auth_routes(em: Emulator) -> list[StarletteRoute]:
    async def obtain(request: Request) -> Response:
        params = await _credentials(request)
        missing = {
            name: ["This field is required."]
            for name in ("username", "password")
            if not isinstance(params.get(name), str) or not params.get(name)
        }
        if missing:
            return JSONResponse(missing, status_code=400)
        if not em.config.users.check(params["username"], params["password"]):
            return JSONResponse(P.auth_error_body("No active account found with the given credentials"), status_code=401)
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

    return [StarletteRoute("/auth", obtain, methods=["POST"]), StarletteRoute("/auth/refresh", refresh, methods=["POST"])]


class Surface:
    """The outer layer: ``//em//files/list/`` → ``/em/files/list`` (the official client
    concatenated URLs, §1), headers over their limit refused, and the emulator's extensions
    advertised on every answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(len(k) + len(v) for k, v in scope.get("headers", ())) > P.MAX_HEADER_BYTES:
            await fail_code("HEADERS_TOO_LARGE", f"the request's headers are over {P.MAX_HEADER_BYTES} bytes")(
                scope, receive, send
            )
            return
        path = re.sub(r"/{2,}", "/", scope["path"])
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/") or "/"
        scope = {**scope, "path": path}

        async def advertising_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (P.EXTENSIONS_HEADER.lower().encode(), ADVERTISED.encode())],
                }
            await send(message)

        await self.app(scope, receive, advertising_send)


def create_app(config: EmulatorConfig) -> Any:
    """The ASGI app: routes, auth, path normalisation and (when configured) chaos."""
    em = Emulator(config)
    routes = auth_routes(em)
    for route, handler in HANDLERS.items():
        routes.append(StarletteRoute(route.path, authenticated(em, handler), methods=list(route.methods)))

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi(str(request.base_url).rstrip("/")))

    async def docs(request: Request) -> Response:
        return HTMLResponse(docs_html())

    async def healthz(request: Request) -> Response:
        return JSONResponse({"message": "ok"})

    routes += [StarletteRoute("/openapi.json", openapi_json), StarletteRoute("/docs", docs), StarletteRoute("/healthz", healthz)]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
        return fail(status, code, f"{request.method} {em.scrub(request.url.path)[:200]}: {getattr(exc, 'detail', '')}")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(em.shutdown)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.emulator = em
    return Surface(ChaosMiddleware(app, config.chaos))
