"""The retriever contract that every backend (LanceDB embedded, Weaviate in production) implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol, runtime_checkable

from domainroute.schemas import Passage


@dataclass(frozen=True, slots=True)
class Chunk:
    """One section of one version of one document, ready to store.

    ``chunk_id`` is stable: ``{doc_id}@v{version}#{ordinal:03d}``. ``valid_to`` is the effective date of the next
    version of the same document (exclusive) or None while this version is the newest.
    """

    chunk_id: str
    doc_id: str
    version: int
    ordinal: int
    title: str
    section: str
    text: str
    line: str
    doc_type: str
    effective_date: date
    tenant: str
    valid_to: date | None = None
    vector: Sequence[float] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Filters the caller (never the model) sets. Empty lists mean 'any'."""

    lines: tuple[str, ...] = ()
    doc_types: tuple[str, ...] = ()
    as_of: date | None = None  # only versions in force on this date (date of loss); None = today


@runtime_checkable
class Retriever(Protocol):
    """Tenant-isolated hybrid retrieval with filters and document versions."""

    def upsert_document(self, chunks: Sequence[Chunk], *, tenant: str) -> int:
        """Store all chunks of one document version, replacing that version's previous chunks; return count.

        Also recomputes ``valid_to`` for every stored version of the same ``doc_id`` in the tenant.
        """
        ...

    def search(
        self,
        query: str,
        *,
        tenant: str,
        k: int,
        filters: SearchFilters = SearchFilters(),
        alpha: float = 0.5,
        mode: str = "hybrid",
    ) -> list[Passage]:
        """Top-k passages of ``tenant`` only. mode: hybrid | vector | keyword. alpha: 1 = vector only."""
        ...

    def count(self, *, tenant: str) -> int: ...

    def tenants(self) -> list[str]: ...

    def healthy(self) -> bool: ...
