"""Chaos for the emulator: what a real EM link does to a client (latency, a thin pipe,
``423 LOCKED`` while busy, ``500`` on SCP failures, dropped connections), all off by
default, bounded, and reproducible from a seed."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]  # Starlette types its scope as a MutableMapping

# Paths chaos never touches: the docs, and the readiness probe tests wait on.
CALM_PATHS = ("/docs", "/openapi.json", "/healthz")
MAX_LATENCY = 30.0
MIN_BANDWIDTH = 1024
MAX_RATE = 0.9


@dataclass(frozen=True)
class ChaosConfig:
    latency: float = 0.0  # up to this many seconds added before each answer
    bandwidth: int = 0  # bytes per second each way, 0 = unlimited
    locked_rate: float = 0.0  # share of calls answered 423 LOCKED
    error_rate: float = 0.0  # share of calls answered 500
    drop_rate: float = 0.0  # share of calls whose connection is dropped (before or after the work)
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.latency <= MAX_LATENCY:
            raise ValueError(f"chaos latency must be between 0 and {MAX_LATENCY} seconds")
        if self.bandwidth and self.bandwidth < MIN_BANDWIDTH:
            raise ValueError(f"chaos bandwidth must be 0 (unlimited) or at least {MIN_BANDWIDTH} bytes/s")
        for name in ("locked_rate", "error_rate", "drop_rate"):
            if not 0 <= getattr(self, name) <= MAX_RATE:
                raise ValueError(f"chaos {name.replace('_', ' ')} must be between 0 and {MAX_RATE}, so calls can still succeed")
        if self.locked_rate + self.error_rate + self.drop_rate > MAX_RATE:
            raise ValueError(f"the chaos rates together must stay at or below {MAX_RATE}")

    @property
    def active(self) -> bool:
        return bool(self.latency or self.bandwidth or self.locked_rate or self.error_rate or self.drop_rate)


class ChaosMiddleware:
    """ASGI middleware applying :class:`ChaosConfig` to every call outside CALM_PATHS."""

    def __init__(self, app: ASGIApp, config: ChaosConfig) -> None:
        self.app = app
        self.config = config
        self.random = random.Random(config.seed)

    async def _json(self, send: Send, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.config
        if scope["type"] != "http" or not config.active or scope["path"].startswith(CALM_PATHS):
            await self.app(scope, receive, send)
            return
        if config.latency:
            await asyncio.sleep(self.random.uniform(0, config.latency))
        roll = self.random.random()
        if roll < config.locked_rate:
            await self._json(send, 423, {"error": "LOCKED", "message": "CG2 is busy with another request (emulated)"})
            return
        roll -= config.locked_rate
        if roll < config.error_rate:
            await self._json(send, 500, {"error": "INTERNAL_ERROR", "message": "SCP transfer to the EM failed (emulated)"})
            return
        roll -= config.error_rate
        drop = roll < config.drop_rate
        drop_after_work = drop and self.random.random() < 0.5
        if drop and not drop_after_work:
            await _drop(send)
            return
        dropped = False

        async def throttled_receive() -> Message:
            message = await receive()
            if config.bandwidth and message.get("body"):
                await asyncio.sleep(len(message["body"]) / config.bandwidth)
            return message

        async def chaotic_send(message: Message) -> None:
            nonlocal dropped
            if dropped:
                return
            if drop_after_work and message["type"] == "http.response.start":
                # The work is done; the answer never arrives: the client must retry safely.
                dropped = True
                await _drop(send)
                return
            if config.bandwidth and message.get("body"):
                await asyncio.sleep(len(message["body"]) / config.bandwidth)
            await send(message)

        await self.app(scope, throttled_receive, chaotic_send)


async def _drop(send: Send) -> None:
    """Promise a long body, send a few bytes of it and stop: the server then closes the
    connection mid-answer, which a client sees as a broken connection."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", b"1048576")]})
    await send({"type": "http.response.body", "body": b"dropped", "more_body": True})
