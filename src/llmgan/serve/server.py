"""uvicorn for ``llmgan serve``: its h11 protocol with a header deadline, and a logging setup.

uvicorn times out idle keep-alive connections but, once a connection has sent one byte of a new
request, waits for the rest of its headers forever (every byte re-arms nothing): a slow-loris client
holds the connection indefinitely. :func:`guarded_protocol` closes a connection whose request line and
headers are not complete ``header_timeout`` seconds after it opened (or after its previous response).
Bodies have their own deadline in the app's Guard.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


def guarded_protocol(header_timeout: float) -> type[H11Protocol]:
    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._cycle_seen = self.cycle
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.cycle is self._cycle_seen and not self.transport.is_closing():
                logging.getLogger("llmgan.serve").info("closed a connection whose headers took over %g s",
                                                       header_timeout)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self._header_timer is not None and self.cycle is not self._cycle_seen:
                self._disarm()  # a request's headers are complete

        def on_response_complete(self) -> None:
            self._arm()  # the next request on this connection gets the same deadline
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's own logging config plus our loggers in its format (its access log is replaced by ours,
    which adds the latency and the model)."""
    cfg = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    cfg["loggers"]["llmgan.serve"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    cfg["loggers"]["llmgan.serve.access"] = {"handlers": ["access_plain"], "level": level.upper(),
                                             "propagate": False}
    cfg["formatters"]["access_plain"] = {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"}
    cfg["handlers"]["access_plain"] = {"formatter": "access_plain", "class": "logging.StreamHandler",
                                       "stream": "ext://sys.stdout"}
    return cfg


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8000, *, header_timeout: float = 10.0,
                keep_alive: int = 5, log_level: str = "info") -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, http=guarded_protocol(header_timeout), lifespan="off",
                            timeout_keep_alive=keep_alive, access_log=False, log_config=log_config(log_level),
                            log_level=log_level, server_header=False)
    return uvicorn.Server(config)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), so callers know the port before the server runs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
