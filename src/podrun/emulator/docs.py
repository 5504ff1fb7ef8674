"""The emulator's API description: one route table, rendered as OpenAPI JSON at
``/openapi.json`` and as a plain HTML page at ``/docs`` (no CDN, no JavaScript)."""

from __future__ import annotations

import html
from typing import Any

_POD = ("pod_name", "str", False, "volume (and pod) to use; omitted = the user's default volume. Alias: pvc_name")

# path -> methods, summary, parameters (name, type, required, description), success example
ROUTE_DOCS: dict[str, dict[str, Any]] = {
    "/auth/": {"methods": ("POST",), "summary": "Obtain a JWT pair (form or JSON body). No Bearer header.",
               "params": [("username", "str", True, ""), ("password", "str", True, "")],
               "example": {"refresh": "<jwt>", "access": "<jwt>"}},
    "/auth/refresh": {"methods": ("POST",), "summary": "Exchange a refresh token for a new access token.",
                      "params": [("refresh", "str", True, "refresh token from /auth/")], "example": {"access": "<jwt>"}},
    "/em/files/uplink": {"methods": ("POST",), "summary": "Upload files (multipart, parts named 'files') into the volume.",
                         "params": [("files", "file[]", True, "repeated file parts; the part's filename is the stored name"),
                                    ("dest_path", "str", False, "folder inside the volume"), _POD],
                         "example": {"message": "Successfully uplinked files", "data": {"file_count": 2, "total_size_kb": 0.47}}},
    "/em/files/list": {"methods": ("GET", "POST"), "summary": "The volume's file tree (size as string, signed int64 hash).",
                       "params": [_POD], "example": {"message": "Successfully listed files", "data": [
                           {"type": "file", "name": "a.txt", "size": "5", "time": "2025-11-20-12-31", "hash": -6285199279658827551}]}},
    "/em/files/downlink": {"methods": ("GET", "POST"), "summary": "Stream one file; Content-Disposition names it.",
                           "params": [("filepath", "str", True, "file inside the volume"), _POD], "example": "raw bytes"},
    "/em/files/delete": {"methods": ("POST",), "summary": "Delete a file or a folder (recursively).",
                         "params": [("filepath", "str", True, "file or folder inside the volume"), _POD],
                         "example": {"message": "File deleted successfully"}},
    "/em/pod/image/build": {"methods": ("POST",), "summary": "Build an image from a Dockerfile and context in the volume.",
                            "params": [("dockerfile", "str", True, ""), ("image", "str", True, ""), ("context", "str", True, ""), _POD],
                            "example": {"message": "Docker Image built successfully"}},
    "/em/pod/image/load": {"methods": ("POST",), "summary": "Load an image tar (docker save) from the volume.",
                           "params": [("tarfile", "str", True, ""), ("image", "str", True, ""), _POD],
                           "example": {"message": "Tar file loaded successfully"}},
    "/em/pod/image/list": {"methods": ("GET", "POST"), "summary": "The user's own built and loaded images.",
                           "params": [], "example": {"message": "Successfully loaded list of docker images", "data": []}},
    "/em/pod/run": {"methods": ("POST",), "summary": "Schedule a pod (replaces a pod of the same pod_name).",
                    "params": [("image", "str", True, ""), ("node", "str", True, "FPGA, GPU or MPU"),
                               ("max_duration", "number", True, "minutes; fractions are an emulator extension for tests"),
                               ("command", "str", False, "split into argv, no shell"), ("args", "list[str]", False, ""),
                               ("envs", "dict", False, ""), ("ports", "list[int]", False, ""),
                               ("scheduled_time", "str", False, "ISO-8601 with timezone"), _POD],
                    "example": {"message": "Docker run scheduled successfully"}},
    "/em/pod/status": {"methods": ("GET", "POST"), "summary": "The pod's Kubernetes container state; 404 if never run.",
                       "params": [_POD], "example": {"message": "Successfully fetched DPhi Pod status",
                                                     "data": {"state": {"running": {"startedAt": "2025-11-20T12:31:12Z"}}}}},
    "/em/nodes/status": {"methods": ("GET", "POST"), "summary": "Nodes able to schedule a pod.", "params": [],
                         "example": {"message": "Nodes retrieved successfully.", "data": [{"name": "fpga", "status": "True"}]}},
    "/em/pvc/list": {"methods": ("GET", "POST"), "summary": "The user's volumes (undocumented on the real EM).", "params": [],
                     "example": {"message": "Successfully listed volumes", "data": ["alice-pvc", "pod-a"]}},
    "/em/pvc/delete": {"methods": ("POST",), "summary": "Delete a volume and everything in it (undocumented on the real EM).",
                       "params": [("pvc_name", "str", True, "alias: pvc")], "example": {"message": "Volume deleted successfully"}},
}

ERRORS = {"400": "InvalidRequest: {error, message[, log_tail]}", "401": "missing, invalid or expired token: {detail}",
          "403": "ILLEGAL_PATH", "404": "NotFound (file, pod, volume)", "423": "LOCKED (busy; retry)", "500": "INTERNAL_ERROR"}


def openapi(server_url: str) -> dict[str, Any]:
    """An OpenAPI 3 document of ROUTE_DOCS, written by hand (Starlette has none built in)."""
    paths: dict[str, Any] = {}
    for path, doc in ROUTE_DOCS.items():
        operations = {}
        for method in doc["methods"]:
            where = "query" if method == "GET" else "body"
            operation: dict[str, Any] = {
                "summary": doc["summary"],
                "responses": {"200": {"description": "success", "content": {"application/json": {"example": doc["example"]}}},
                              **{code: {"description": text} for code, text in ERRORS.items()}},
            }
            if not path.startswith("/auth"):
                operation["security"] = [{"bearer": []}]
            if where == "query":
                operation["parameters"] = [{"name": n, "in": "query", "required": r, "description": d, "schema": {"type": "string"}}
                                           for n, _t, r, d in doc["params"]]
            elif doc["params"]:
                operation["requestBody"] = {"content": {media: {"schema": {
                    "type": "object", "required": [n for n, _t, r, _d in doc["params"] if r],
                    "properties": {n: {"description": f"{t}. {d}".strip(". ")} for n, t, _r, d in doc["params"]}}}
                    for media in ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")}}
            operations[method.lower()] = operation
        paths[path] = operations
    return {
        "openapi": "3.0.3",
        "info": {"title": "EM API (podrun emulator)", "version": "1",
                 "description": "DPhi Space Clustergate-2 EM API as emulated by podrun. Bodies may be JSON, form or multipart."},
        "servers": [{"url": server_url}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "paths": paths,
    }


def docs_html() -> str:
    """A readable page of every route, generated from the same table as /openapi.json."""
    rows = []
    for path, doc in ROUTE_DOCS.items():
        params = "".join(f"<li><code>{html.escape(n)}</code> <i>{html.escape(t)}</i>{' (required)' if r else ''}"
                         f"{' — ' + html.escape(d) if d else ''}</li>" for n, t, r, d in doc["params"])
        rows.append(f"<tr><td><b>{' | '.join(doc['methods'])}</b></td><td><code>{html.escape(path)}</code></td>"
                    f"<td>{html.escape(doc['summary'])}<ul>{params}</ul></td></tr>")
    errors = "".join(f"<li><b>{code}</b> {html.escape(text)}</li>" for code, text in ERRORS.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>EM API emulator</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:.4em;border-bottom:1px solid #ddd}</style>"
        "</head><body><h1>EM API (podrun emulator)</h1>"
        "<p>Authenticate with <code>POST /auth/</code>, then send <code>Authorization: Bearer &lt;access&gt;</code>. "
        "Machine-readable: <a href='/openapi.json'>/openapi.json</a>.</p>"
        f"<table>{''.join(rows)}</table><h2>Errors</h2><ul>{errors}</ul></body></html>"
    )
