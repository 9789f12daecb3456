"""How a backend failure surfaces: one chained domainroute error whose message says what could not be done."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from domainroute.errors import BackendUnavailableError, DomainRouteError


@contextmanager
def backend_errors(message: str, error: type[BackendUnavailableError]) -> Iterator[None]:
    """Re-raise any store / network / IO failure as ``error(f"{message}: ...")`` from the original.

    Our own errors (InputError, ConfigError, an inner RetrievalUnavailableError) pass through unchanged.
    """
    try:
        yield
    except DomainRouteError:
        raise
    except Exception as exc:
        raise error(f"{message}: {type(exc).__name__}: {exc}") from exc
