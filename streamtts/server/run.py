"""Run the server with uvicorn (``streamtts serve``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..engines.base import Engine
from ..errors import BackendUnavailable
from .app import create_app
from .impair import Impairment

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

__all__ = ["serve"]


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    engine: Engine | None = None,
    api_key: str | None = None,
    impairment: Impairment | None = None,
    log_level: str = "info",
    extra_routes: Sequence[BaseRoute] = (),
) -> None:
    """Serve the speech API until interrupted (blocking).

    Args:
        host: Address to listen on (loopback by default: the server has no TLS).
        port: TCP port.
        engine: The engine (default: the embedded espeak-ng).
        api_key: Require ``Authorization: Bearer <api_key>``.
        impairment: Network impairment for every response (``X-Impair-*`` headers override).
        log_level: uvicorn's log level.
        extra_routes: More Starlette routes served by the same app (e.g. the browser relay).

    Raises:
        BackendUnavailable: uvicorn/Starlette are not installed.
    """
    try:
        import uvicorn
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(
            "the local server needs the extra 'server': pip install 'streamtts[server]'"
        ) from exc
    app = create_app(engine, api_key=api_key, impairment=impairment, extra_routes=extra_routes)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
