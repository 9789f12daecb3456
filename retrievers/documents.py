"""Write-side rules shared by every backend: what one ``upsert_document`` call may contain, its vectors, the
validity window of each stored version, and how a stored row becomes a ``Passage``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np

from domainroute.embeddings import Embedder
from domainroute.errors import InputError
from domainroute.retrievers.base import Chunk
from domainroute.retrievers.filters import OPEN_END, validate_tenant, validate_value
from domainroute.retrievers.ingest import embedding_text
from domainroute.schemas import Passage


@dataclass(frozen=True, slots=True)
class DocumentVersion:
    """The chunks of one version of one document, checked to agree with each other and with the tenant."""

    doc_id: str
    version: int
    effective_date: date
    chunks: tuple[Chunk, ...]


def check_document(chunks: Sequence[Chunk], *, tenant: str) -> DocumentVersion:
    """Raise InputError unless ``chunks`` are one version of one document of ``tenant`` with contract chunk ids."""
    validate_tenant(tenant)
    if not chunks:
        raise InputError("upsert_document needs the chunks of one document version; got none")
    first = chunks[0]
    if isinstance(first.version, bool) or not isinstance(first.version, int) or first.version < 1:
        raise InputError(f"{first.chunk_id}: version must be an integer >= 1, got {first.version!r}")
    if not isinstance(first.effective_date, date) or isinstance(first.effective_date, datetime):
        raise InputError(f"{first.chunk_id}: effective_date must be a date, got {first.effective_date!r}")
    seen: set[str] = set()
    for chunk in chunks:
        same = (chunk.doc_id, chunk.version, chunk.effective_date)
        if same != (first.doc_id, first.version, first.effective_date):
            raise InputError(
                f"{chunk.chunk_id}: one upsert_document call takes one document version; "
                f"{same} differs from {(first.doc_id, first.version, first.effective_date)}"
            )
        if chunk.tenant != tenant:
            raise InputError(f"{chunk.chunk_id}: chunk says tenant {chunk.tenant!r} but is stored for {tenant!r}")
        expected = f"{chunk.doc_id}@v{chunk.version}#{chunk.ordinal:03d}"
        if chunk.chunk_id != expected:
            raise InputError(f"chunk_id {chunk.chunk_id!r} does not follow the contract; expected {expected!r}")
        if chunk.chunk_id in seen:
            raise InputError(f"chunk_id {chunk.chunk_id!r} appears twice in one document version")
        seen.add(chunk.chunk_id)
        validate_value("line", chunk.line)
        validate_value("doc_type", chunk.doc_type)
    return DocumentVersion(first.doc_id, first.version, first.effective_date, tuple(chunks))


def chunk_vectors(chunks: Sequence[Chunk], embedder: Callable[[], Embedder]) -> np.ndarray:
    """float32 (n, dim) vectors: the chunk's own where set, else embedded (the embedder is only loaded then)."""
    missing = [i for i, chunk in enumerate(chunks) if chunk.vector is None]
    encoded: dict[int, np.ndarray] = {}
    if missing:
        encoded = dict(zip(missing, embedder().encode([embedding_text(chunks[i]) for i in missing]), strict=True))
    rows = [
        encoded[i] if i in encoded else np.asarray(chunk.vector, dtype=np.float32) for i, chunk in enumerate(chunks)
    ]
    shapes = {row.shape for row in rows}
    if len(shapes) != 1 or rows[0].ndim != 1 or rows[0].size == 0:
        raise InputError(f"{chunks[0].doc_id}: chunk vectors must be flat, non-empty and of one length: {shapes}")
    vectors = np.stack(rows)
    if not np.isfinite(vectors).all():
        raise InputError(f"{chunks[0].doc_id}: a chunk vector contains NaN or infinity")
    return vectors


def valid_to_by_version(effective: Mapping[int, date]) -> dict[int, date | None]:
    """Each version's valid_to: the effective date of the next-newer version by effective date; None for the newest.

    Versions with the same effective date are ordered by version number, so the older one gets an empty window.
    """
    order = sorted(effective, key=lambda version: (effective[version], version))
    return {
        version: effective[order[i + 1]] if i + 1 < len(order) else None for i, version in enumerate(order)
    }


def stored_valid_to(valid_to: date | None) -> date:
    """How a valid_to is stored: the newest version's open end becomes OPEN_END, so ``valid_to > as_of`` holds."""
    return OPEN_END if valid_to is None else valid_to


def passage_from_row(row: Mapping[str, Any], *, tenant: str, score: float) -> Passage:
    """A stored row (LanceDB dict or Weaviate properties) as the Passage the graph cites."""
    effective = row["effective_date"]
    if isinstance(effective, datetime):
        effective = effective.date()
    return Passage(
        chunk_id=row["chunk_id"],
        doc_id=row["doc_id"],
        title=row["title"],
        section=row.get("section") or "",
        text=row["text"],
        line=row["line"],
        doc_type=row["doc_type"],
        effective_date=effective.isoformat() if isinstance(effective, date) else str(effective),
        version=int(row["version"]),
        tenant=tenant,
        score=float(score),
    )
