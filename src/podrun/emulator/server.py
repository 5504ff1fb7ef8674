"""Serving the emulator: uvicorn with a guarded HTTP/1.1 protocol (header, body and keep-alive
timeouts, a connection cap, EM-shaped answers to unreadable requests), a private root, and
an explicit choice to bind anything but loopback."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.config import LOG_LEVELS
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..platform import em_protocol as P
from ..platform.em_protocol import error_body
from .app import EmulatorConfig, create_app

log = logging.getLogger("podrun.emulator")
LEVELS = tuple(LOG_LEVELS)  # critical, error, warning, info, debug, trace


@dataclass(frozen=True)
class Timeouts:
    header: float = 10.0  # from connection (or the previous answer) to a complete request head
    body: float = 30.0  # the longest pause while a request body is arriving
    keep_alive: float = 5.0  # an idle connection between requests
    max_connections: int = 512

    def __post_init__(self) -> None:
        if min(self.header, self.body, self.keep_alive) <= 0 or self.max_connections < 1:
            raise ValueError("timeouts must be positive and --max-connections at least 1")


def is_loopback(host: str) -> bool:
    """True when every address ``host`` stands for is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def bind_warning(host: str, allow_remote: bool) -> str | None:
    """None for loopback; a warning when a non-loopback bind is allowed; ValueError when it is not."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise ValueError(
            f"--host {host} is not a loopback address: the emulator has no TLS and its tenants are untrusted; "
            "add --allow-remote to bind it anyway"
        )
    return (
        f"WARNING: the emulator listens on {host}, reachable from other machines, over plain HTTP: passwords and "
        "tokens travel in clear text"
    )


def _answer(status: int, reason: bytes, code: str, message: str) -> list[h11.Event]:
    body = json.dumps(error_body(code, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    return [h11.Response(status_code=status, headers=headers, reason=reason), h11.Data(data=body), h11.EndOfMessage()]


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus: a request head must be complete within ``header`` seconds
    of the connection or the previous answer (slowloris), a body may pause at most ``body``
    seconds, at most ``max_connections`` connections are served, and a request the server
    cannot parse gets the EM's JSON error shape."""

    timeouts = Timeouts()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._guard: asyncio.TimerHandle | None = None
        self._phase = "head"
        if len(self.connections) > self.timeouts.max_connections:
            transport.close()
            return
        self._arm(self.timeouts.header, "the request head did not arrive in time")

    def _arm(self, delay: float, why: str) -> None:
        self._disarm()
        self._guard = self.loop.call_later(delay, self._expire, why)

    def _disarm(self) -> None:
        if getattr(self, "_guard", None) is not None:
            self._guard.cancel()  # type: ignore[union-attr]
            self._guard = None

    def _expire(self, why: str) -> None:
        self._guard = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the handler reads a disconnect; its answer goes nowhere
            cycle.message_event.set()
        if cycle is None or cycle.response_complete or not cycle.response_started:
            try:
                events = _answer(408, b"Request Timeout", "REQUEST_TIMEOUT", why)
                self.transport.write(b"".join(self.conn.send(e) or b"" for e in events))
            except h11.LocalProtocolError:
                pass
        self.transport.close()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        cycle = self.cycle
        if cycle is not None and cycle is not before:  # a new request head arrived
            self._phase = "body" if cycle.more_body else "none"
        elif self._phase != "body" or cycle is None:
            return
        elif not cycle.more_body:
            self._phase = "none"
        if self._phase == "body":
            self._arm(self.timeouts.body, "the request body stopped arriving")
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._phase = "head"
            self._arm(self.timeouts.header + self.timeouts.keep_alive, "the request head did not arrive in time")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        # h11 refuses a head still incomplete past its limit; whether it gets there or the
        # whole head arrives first depends on how the bytes were split in transit, so the
        # answer is decided by what is pending, not by which check fired.
        if len(self.conn.trailing_data[0]) > P.MAX_HEADER_BYTES:
            events = _answer(431, b"Request Header Fields Too Large", "HEADERS_TOO_LARGE",
                             f"the request's headers are over {P.MAX_HEADER_BYTES} bytes")
        else:
            events = _answer(400, b"Bad Request", "BAD_REQUEST",
                             "Invalid HTTP request received (request line or headers malformed)")
        with contextlib.suppress(h11.LocalProtocolError):
            self.transport.write(b"".join(self.conn.send(e) or b"" for e in events))
        self.transport.close()


def make_private(config: EmulatorConfig) -> None:
    """Everything the emulator and its pods create is for its own user only (0700/0600), and
    uploads are spooled inside the root (its own file system, its own disk-full answers)."""
    os.umask(0o077)
    config.root.mkdir(parents=True, exist_ok=True)
    os.chmod(config.root, 0o700)
    spool = config.root / ".spool"
    spool.mkdir(exist_ok=True)
    os.chmod(spool, 0o700)
    tempfile.tempdir = str(spool)


def serve(config: EmulatorConfig, host: str, port: int, log_level: str, timeouts: Timeouts) -> None:
    import uvicorn

    make_private(config)
    logging.basicConfig(level=LOG_LEVELS[log_level])
    GuardedH11Protocol.timeouts = timeouts
    uvicorn_config: Any = uvicorn.Config(
        create_app(config),
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        http=GuardedH11Protocol,
        timeout_keep_alive=int(max(1, timeouts.keep_alive)),
        h11_max_incomplete_event_size=P.MAX_HEADER_BYTES,
        ws="none",
        server_header=False,
    )
    uvicorn.Server(uvicorn_config).run()
