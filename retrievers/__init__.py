"""domainroute.retrievers"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from domainroute.errors import ConfigError

if TYPE_CHECKING:
    from domainroute.embeddings import Embedder
    from domainroute.retrievers.base import Retriever

BACKENDS = ("lancedb", "weaviate")


def make_retriever(
    backend: str,
    *,
    store_path: Path | str | None = None,
    weaviate_url: str | None = None,
    weaviate_collection: str | None = None,
    embedder: Embedder | None = None,
) -> Retriever:
    """The retriever for ``backend`` (settings.retriever_backend); only that backend's package is imported.

    lancedb needs ``store_path`` (settings.store_path); weaviate needs ``weaviate_url`` (settings.weaviate_url).
    Nothing connects until the first call on the retriever.
    """
    if backend == "lancedb":
        if store_path is None:
            raise ConfigError("the lancedb retriever needs store_path (a folder, e.g. ~/.domainroute/lancedb)")
        from domainroute.retrievers.lancedb_store import LanceDBRetriever

        return LanceDBRetriever(Path(store_path), embedder=embedder)
    if backend == "weaviate":
        if not weaviate_url:
            raise ConfigError(
                "the weaviate retriever needs weaviate_url (e.g. http://127.0.0.1:8080); "
                "set DOMAINROUTE_WEAVIATE_URL or weaviate_url in domainroute.toml"
            )
        from domainroute.retrievers.weaviate_store import DEFAULT_COLLECTION, WeaviateRetriever

        return WeaviateRetriever(weaviate_url, embedder=embedder, collection=weaviate_collection or DEFAULT_COLLECTION)
    raise ConfigError(f"unknown retriever backend {backend!r}; known: {', '.join(BACKENDS)}")


def configured_retriever(settings: Any) -> Retriever:
    """The store ``settings`` point at, embedding with the pack's retrieval encoder (its trained adapter when it has
    one, :func:`domainroute.retrievers.encoder.retrieval_embedder`): what ``ingest``, ``ask`` and the API use."""
    from domainroute.retrievers.encoder import retrieval_embedder

    return make_retriever(settings.retriever_backend, store_path=settings.store_path,
                          weaviate_url=settings.weaviate_url, weaviate_collection=settings.weaviate_collection,
                          embedder=retrieval_embedder(settings.pack_dir))
