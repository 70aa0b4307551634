"""Cooperative stop requests: SIGTERM/SIGINT honoured inside long loops, not only between rounds.

The training engine's signal handler calls :func:`request`; long loops everywhere below it (token
steps of sampling, Monte-Carlo rollout prefixes, discriminator minibatches, evaluation batches)
call :func:`point`. ``point`` raises :class:`StopRequested` only when a stop was requested AND the
engine's guard says the work in progress can be rolled back exactly (the engine snapshots RNG and
the modules a sub-step touched, see ``llmgan.training.engine``). Outside training no guard is set,
so ``point`` is a no-op costing one attribute read: sampling in ``generate`` or ``serve`` is never
interrupted by it.

It lives at the bottom layer so that models, rewards and algorithms can mark interruption points
without importing the engine.
"""

from __future__ import annotations

from collections.abc import Callable


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """Raised at an interruption point after SIGTERM/SIGINT; the engine checkpoints and exits."""


class _Flag:
    requested: bool = False
    guard: Callable[[], bool] | None = None


_FLAG = _Flag()


def request() -> None:
    """Ask the running training loop to stop at its next interruption point."""
    _FLAG.requested = True


def clear() -> None:
    _FLAG.requested = False


def requested() -> bool:
    return _FLAG.requested


def set_guard(guard: Callable[[], bool] | None) -> None:
    """Install (or remove, with None) the engine's "may I abort now?" check."""
    _FLAG.guard = guard


def point() -> None:
    """An interruption point: raise StopRequested if a stop is pending and the engine can roll back."""
    if _FLAG.requested and _FLAG.guard is not None and _FLAG.guard():
        raise StopRequested
