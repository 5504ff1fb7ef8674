"""The emulator's API description, rendered from the protocol's route table
(``platform/em_protocol.py``) as OpenAPI JSON at ``/openapi.json`` and as a plain HTML page
at ``/docs`` (no CDN, no JavaScript)."""

from __future__ import annotations

import html
from collections import defaultdict
from typing import Any

from ..platform.em_protocol import ERROR_STATUS, EXTENSIONS_HEADER, FRACTIONAL_MINUTES, MAX_DURATION_MINUTES, ROUTES

_KIND_TYPES = {
    "ports": "list[int]",
    "args": "list[str]",
    "envs": "dict",
    "files": "file[]",
    "minutes": "number",
    "command": "str | list[str]",
}


def _errors() -> dict[str, str]:
    by_status: dict[int, list[str]] = defaultdict(list)
    for code, status in ERROR_STATUS.items():
        by_status[status].append(code)
    texts = {str(s): "{error, message[, log_tail]}: " + ", ".join(codes) for s, codes in sorted(by_status.items())}
    texts["401"] = "missing, invalid or expired token: {detail, code}"
    return dict(sorted(texts.items()))


def _params(route: Any) -> list[tuple[str, str, bool, str]]:
    return [
        (f.name, _KIND_TYPES.get(f.kind, "str"), f.required, f.doc + (f" Alias: {', '.join(f.aliases)}" if f.aliases else ""))
        for f in route.fields
    ]


def openapi(server_url: str) -> dict[str, Any]:
    """An OpenAPI 3 document of the route table, written by hand (Starlette has none built in)."""
    paths: dict[str, Any] = {}
    errors = _errors()
    for route in ROUTES:
        operations = {}
        params = _params(route)
        for method in route.methods:
            operation: dict[str, Any] = {
                "summary": route.summary,
                "responses": {
                    "200": {"description": "success", "content": {"application/json": {"example": route.example}}},
                    **{code: {"description": text} for code, text in errors.items()},
                },
            }
            if not route.path.startswith("/auth"):
                operation["security"] = [{"bearer": []}]
            if method == "GET":
                operation["parameters"] = [
                    {"name": n, "in": "query", "required": r, "description": d, "schema": {"type": "string"}}
                    for n, _t, r, d in params
                ]
            elif params:
                operation["requestBody"] = {
                    "content": {
                        media: {
                            "schema": {
                                "type": "object",
                                "required": [n for n, _t, r, _d in params if r],
                                "properties": {n: {"description": f"{t}. {d}".strip(". ")} for n, t, _r, d in params},
                            }
                        }
                        for media in ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")
                    }
                }
            operations[method.lower()] = operation
        paths[route.path] = operations
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "EM API (podrun emulator)",
            "version": "1",
            "description": (
                "DPhi Space Clustergate-2 EM API as emulated by podrun. Bodies may be JSON, form or multipart; unknown "
                f"fields are refused. max_duration: whole minutes up to {MAX_DURATION_MINUTES}. Extensions are advertised in "
                f"the {EXTENSIONS_HEADER} answer header and used by sending it: {FRACTIONAL_MINUTES} (fractional max_duration)."
            ),
        },
        "servers": [{"url": server_url}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "paths": paths,
    }


def docs_html() -> str:
    """A readable page of every route, generated from the same table as /openapi.json."""
    rows = []
    for route in ROUTES:
        params = "".join(
            f"<li><code>{html.escape(n)}</code> <i>{html.escape(t)}</i>{' (required)' if r else ''}"
            f"{' — ' + html.escape(d) if d else ''}</li>"
            for n, t, r, d in _params(route)
        )
        rows.append(
            f"<tr><td><b>{' | '.join(route.methods)}</b></td><td><code>{html.escape(route.path)}</code></td>"
            f"<td>{html.escape(route.summary)}<ul>{params}</ul></td></tr>"
        )
    errors = "".join(f"<li><b>{code}</b> {html.escape(text)}</li>" for code, text in _errors().items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>EM API emulator</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:.4em;border-bottom:1px solid #ddd}</style>"
        "</head><body><h1>EM API (podrun emulator)</h1>"
        "<p>Authenticate with <code>POST /auth/</code>, then send <code>Authorization: Bearer &lt;access&gt;</code>. "
        "Machine-readable: <a href='/openapi.json'>/openapi.json</a>.</p>"
        f"<p>Extensions (header <code>{EXTENSIONS_HEADER}</code>): <code>{FRACTIONAL_MINUTES}</code> lets "
        f"<code>max_duration</code> be a fraction of a minute. Without it, whole minutes from 1 to {MAX_DURATION_MINUTES}.</p>"
        f"<table>{''.join(rows)}</table><h2>Errors</h2><ul>{errors}</ul></body></html>"
    )
