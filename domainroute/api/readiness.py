"""Warm-up and readiness: load the model, router, policy, store and checkpointer once, report what failed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import anyio

from domainroute.service import AgentService

RETRY_AFTER_S = 5.0


def _load_model(model: Any) -> None:
    load = getattr(model, "load", None)  # the embedded engine loads lazily; a TGI client has nothing to load
    if callable(load):
        load()


def _check_store(service: AgentService) -> None:
    from domainroute.errors import RetrievalUnavailableError

    retriever = service.retriever
    if not retriever.healthy():
        raise RetrievalUnavailableError(f"the {service.settings.retriever_backend} store does not answer")
    retriever.search("warm up", tenant=service.settings.tenant, k=1)  # loads the embedder once


def _warm(component: Any, first_call: Callable[[], Any]) -> None:
    """A two-stage router or policy loads both encoders (``warm``); anything else loads its lazily built encoder
    on a first call."""
    warm = getattr(component, "warm", None)
    if callable(warm):
        warm()
    else:
        first_call()


def check(service: AgentService) -> dict[str, str]:
    """Load each component; 'ok' or 'error: <why>' per component. Blocking: run it in a worker thread."""
    steps: dict[str, Callable[[], Any]] = {
        "pack": lambda: service.pack,
        "model": lambda: _load_model(service.chat_model),
        "router": lambda: _warm(service.router, lambda: service.router.route("warm up")),
        "escalation_policy": lambda: _warm(service.escalation_policy,
                                           lambda: service.escalation_policy.decide("warm up", None)),
        "store": lambda: _check_store(service),
        "checkpointer": lambda: service.checkpointer,
        "graph": lambda: service.graph,
    }
    checks: dict[str, str] = {}
    for name, step in steps.items():
        try:
            step()
        # Reported, not swallowed: /readyz shows it and every /v1 call answers 503 with it until a retry succeeds.
        except Exception as exc:  # noqa: BLE001 - loading a model can fail in many library-specific ways
            checks[name] = f"error: {type(exc).__name__}: {exc}"
        else:
            checks[name] = "ok"
    return checks


class Readiness:
    """Runs ``check`` in a worker thread at most once at a time; after a failure, retries no sooner than 5 s later."""

    def __init__(self, service: AgentService):
        self.service = service
        self.checks: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._last_attempt = -RETRY_AFTER_S

    @property
    def ready(self) -> bool:
        return bool(self.checks) and all(v == "ok" for v in self.checks.values())

    def snapshot(self) -> dict[str, str]:
        return dict(self.checks) or {"service": "loading"}

    async def ensure(self) -> bool:
        if self.ready:
            return True
        async with self._lock:
            if not self.ready and time.monotonic() - self._last_attempt >= RETRY_AFTER_S:
                self._last_attempt = time.monotonic()
                self.checks = await anyio.to_thread.run_sync(check, self.service)
        return self.ready

    def failures(self) -> str:
        bad = {k: v for k, v in self.snapshot().items() if v != "ok"}
        return "; ".join(f"{k}: {v}" for k, v in bad.items())
