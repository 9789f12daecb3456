"""One exception base for the package; each subclass says what went wrong and how to fix it."""

from __future__ import annotations


class DomainRouteError(Exception):
    """Base class for every error domainroute raises on purpose."""


class InputError(DomainRouteError, ValueError):
    """Bad input at a boundary (CLI, API): the caller can fix it. The CLI exits 2."""


class ConfigError(DomainRouteError):
    """The configuration (settings, pack, model paths) is inconsistent."""


class UnknownAdapterError(DomainRouteError, KeyError):
    """An adapter id the engine does not know. TGI would silently use the base model; we refuse."""

    def __init__(self, adapter_id: str, known: list[str]):
        self.adapter_id = adapter_id
        self.known = sorted(known)
        super().__init__(adapter_id)

    def __str__(self) -> str:
        known = ", ".join(self.known) or "(none loaded)"
        return f"unknown adapter id {self.adapter_id!r}; known: {known} (or no adapter for the base model)"


class ThreadNotFoundError(InputError):
    """No conversation with this thread id exists in the checkpoint store."""


class NotPausedError(InputError):
    """Resume was asked for a thread that is not waiting for a human."""


class BackendUnavailableError(DomainRouteError):
    """An infrastructure backend (vector store, LLM server) cannot be reached or answered an error."""


class RetrievalUnavailableError(BackendUnavailableError):
    """The vector store is down or unreachable: the graph escalates instead of answering without sources."""
