"""The EM API emulator: an HTTP server that speaks DPhi Space's EM API on top of
LocalPlatform. Run it with ``podrun emulator`` or ``python -m podrun.emulator``.

Its dependencies are the ``emulator`` extra (starlette, uvicorn, pyjwt, python-multipart);
``create_app`` is imported lazily so that ``podrun --help`` works without them."""

from __future__ import annotations

from typing import Any


def create_app(config: Any) -> Any:
    from .app import create_app as _create_app

    return _create_app(config)


__all__ = ["create_app"]
