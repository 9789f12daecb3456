"""The Retriever contract on Weaviate (production): one collection with native multi-tenancy, our own vectors.

Needs the optional extra: ``pip install 'domainroute[weaviate]'``; ``weaviate`` is imported only when a
WeaviateRetriever is built. Connects on first use. Scores: vector mode = 1 - cosine distance; keyword mode = BM25;
hybrid = Weaviate's relative score fusion (the same fusion ``LanceDBRetriever`` runs itself).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import date, datetime, timezone
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from domainroute.embeddings import ENCODER_NAME, Embedder, default_embedder, encoder_name
from domainroute.errors import BackendUnavailableError, ConfigError, RetrievalUnavailableError
from domainroute.retrievers.base import Chunk, SearchFilters
from domainroute.retrievers.documents import (
    DocumentVersion,
    check_document,
    chunk_vectors,
    passage_from_row,
    stored_valid_to,
    valid_to_by_version,
)
from domainroute.retrievers.failures import backend_errors
from domainroute.retrievers.filters import ResolvedSearch, resolve_search, validate_tenant
from domainroute.schemas import Passage

DEFAULT_COLLECTION = "DomainrouteChunk"
VECTOR_NAME = "default"
ENCODER_MARK = "encoder: "
"""Marks the encoder name in the collection's description (vectors of different encoders do not compare)."""
MAX_VERSIONS_ROWS = 10_000
"""Most stored chunks (all versions) of one document that upsert_document reads back; Weaviate's query cap."""
_FIELD_PROPERTIES = ("chunk_id", "doc_id", "line", "doc_type", "tenant")  # exact-match filters, not searched
_TEXT_PROPERTIES = ("title", "section", "text")
PROPERTIES = [*_FIELD_PROPERTIES, *_TEXT_PROPERTIES, "version", "ordinal", "effective_date", "valid_to"]


def import_weaviate() -> ModuleType:
    """The weaviate-client package, or ConfigError saying how to install it."""
    try:
        import weaviate
    except ImportError as exc:
        raise ConfigError(
            "the Weaviate retriever needs weaviate-client: pip install 'domainroute[weaviate]'"
        ) from exc
    return weaviate


def _moment(day: date) -> datetime:
    """Weaviate DATE properties are RFC 3339 instants: midnight UTC of the day."""
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


class WeaviateRetriever:
    """Tenant-isolated hybrid retrieval on a Weaviate server (HTTP ``url`` plus gRPC on ``grpc_port``)."""

    def __init__(
        self,
        url: str,
        *,
        embedder: Embedder | None = None,
        collection: str = DEFAULT_COLLECTION,
        grpc_port: int = 50051,
        api_key: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._weaviate = import_weaviate()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"weaviate_url must look like http://host:8080, got {url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ConfigError(f"weaviate_url has a bad port: {url!r}") from exc
        self.url = url
        self._host, self._port, self._secure = parts.hostname, port, parts.scheme == "https"
        self._grpc_port = grpc_port
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._collection_name = collection
        self._embedder = embedder
        self._client: Any | None = None
        self._lock = threading.RLock()
        self._collection_exists = False
        self._encoder_checked = False
        self._known_tenants: set[str] = set()

    def __repr__(self) -> str:
        return f"WeaviateRetriever({self.url!r}, grpc_port={self._grpc_port}, collection={self._collection_name!r})"

    # -- the Retriever protocol ---------------------------------------------------------------------------------

    def upsert_document(self, chunks: Sequence[Chunk], *, tenant: str) -> int:
        doc = check_document(chunks, tenant=tenant)
        vectors = chunk_vectors(doc.chunks, self._get_embedder).tolist()
        failure = f"could not store document {doc.doc_id!r} in Weaviate at {self.url}"
        with self._lock, backend_errors(failure, BackendUnavailableError):
            collection = self._create_collection()
            self._check_encoder()
            handle = collection.with_tenant(self._create_tenant(tenant))
            self._write(handle, doc, vectors)
        return len(doc.chunks)

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
        s = resolve_search(query, tenant=tenant, k=k, filters=filters, alpha=alpha, mode=mode)
        failure = f"could not retrieve policy documents: Weaviate at {self.url}"
        with backend_errors(failure, RetrievalUnavailableError):
            if not self._tenant_exists(s.tenant):
                return []
        vector = self._get_embedder().encode_one(s.query).tolist() if s.mode != "keyword" else None
        with backend_errors(failure, RetrievalUnavailableError):
            if vector is not None:
                self._check_encoder()
            handle = self._client_or_raise().collections.get(self._collection_name).with_tenant(s.tenant)
            hits = self._query(handle, s, vector)
        return [passage_from_row(props, tenant=s.tenant, score=score) for props, score in hits]

    def count(self, *, tenant: str) -> int:
        validate_tenant(tenant)
        with backend_errors(f"could not read Weaviate at {self.url}", RetrievalUnavailableError):
            if not self._tenant_exists(tenant):
                return 0
            handle = self._client_or_raise().collections.get(self._collection_name).with_tenant(tenant)
            return int(handle.aggregate.over_all(total_count=True).total_count or 0)

    def tenants(self) -> list[str]:
        with backend_errors(f"could not read Weaviate at {self.url}", RetrievalUnavailableError):
            if not self._has_collection():
                return []
            return sorted(self._client_or_raise().collections.get(self._collection_name).tenants.get())

    def healthy(self) -> bool:
        """True when Weaviate answers its readiness check; False (never raises) otherwise."""
        try:
            return bool(self._client_or_raise().is_ready())
        except RetrievalUnavailableError:
            return False

    def close(self) -> None:
        """Close the connection; the next call reconnects."""
        with self._lock:
            client, self._client = self._client, None
            if client is not None:
                client.close()

    def __enter__(self) -> WeaviateRetriever:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- connection and schema ----------------------------------------------------------------------------------

    def _get_embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    def _encoder_name(self) -> str:
        return encoder_name(self._get_embedder())

    def _check_encoder(self) -> None:
        """ConfigError when the collection's vectors come from another encoder (named in its description; a
        collection created before that: the shared MiniLM). Checked once per retriever."""
        if self._encoder_checked or not self._has_collection():
            return
        description = self._client_or_raise().collections.get(self._collection_name).config.get().description or ""
        stored = description.split(ENCODER_MARK, 1)[1].strip() if ENCODER_MARK in description else ENCODER_NAME
        if stored != self._encoder_name():
            raise ConfigError(
                f"Weaviate collection {self._collection_name!r} at {self.url} holds vectors of encoder {stored!r}, "
                f"but this configuration embeds with {self._encoder_name()!r}: set DOMAINROUTE_WEAVIATE_COLLECTION "
                "to a new name (or delete this collection) and run `domainroute ingest` to fill it"
            )
        self._encoder_checked = True

    def _client_or_raise(self) -> Any:
        with self._lock:
            if self._client is not None:
                return self._client
            wv = self._weaviate
            from weaviate.classes.init import AdditionalConfig, Auth, Timeout

            timeout = Timeout(init=min(self._timeout_s, 5.0), query=self._timeout_s, insert=max(self._timeout_s, 60.0))
            try:
                self._client = wv.connect_to_custom(
                    http_host=self._host,
                    http_port=self._port,
                    http_secure=self._secure,
                    grpc_host=self._host,
                    grpc_port=self._grpc_port,
                    grpc_secure=self._secure,
                    auth_credentials=Auth.api_key(self._api_key) if self._api_key else None,
                    additional_config=AdditionalConfig(timeout=timeout),
                )
            except Exception as exc:
                raise RetrievalUnavailableError(
                    f"could not retrieve policy documents: Weaviate at {self.url} (gRPC port {self._grpc_port}) "
                    f"is unreachable ({type(exc).__name__}: {exc}); start it with `docker compose up weaviate` "
                    "or fix weaviate_url"
                ) from exc
            return self._client

    def _has_collection(self) -> bool:
        if not self._collection_exists:
            self._collection_exists = bool(self._client_or_raise().collections.exists(self._collection_name))
        return self._collection_exists

    def _tenant_exists(self, tenant: str) -> bool:
        if tenant in self._known_tenants:
            return True
        if not self._has_collection():
            return False
        found = self._client_or_raise().collections.get(self._collection_name).tenants.get_by_name(tenant)
        if found is not None:
            self._known_tenants.add(tenant)
        return found is not None

    def _create_collection(self) -> Any:
        client = self._client_or_raise()
        if not self._has_collection():
            from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances

            fields = [
                Property(name=n, data_type=DataType.TEXT, tokenization=Tokenization.FIELD, index_searchable=False)
                for n in _FIELD_PROPERTIES
            ]
            texts = [
                Property(name=n, data_type=DataType.TEXT, tokenization=Tokenization.WORD) for n in _TEXT_PROPERTIES
            ]
            numbers = [Property(name=n, data_type=DataType.INT) for n in ("version", "ordinal")]
            dates = [Property(name=n, data_type=DataType.DATE) for n in ("effective_date", "valid_to")]
            client.collections.create(
                self._collection_name,
                description="domainroute document chunks, one tenant per customer organisation; "
                            f"{ENCODER_MARK}{self._encoder_name()}",
                properties=[*fields, *texts, *numbers, *dates],
                multi_tenancy_config=Configure.multi_tenancy(
                    enabled=True, auto_tenant_creation=True, auto_tenant_activation=True
                ),
                vector_config=Configure.Vectors.self_provided(
                    name=VECTOR_NAME,
                    vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE),
                ),
            )
            self._collection_exists = True
        return client.collections.get(self._collection_name)

    def _create_tenant(self, tenant: str) -> str:
        if not self._tenant_exists(tenant):
            from weaviate.classes.tenants import Tenant

            self._client_or_raise().collections.get(self._collection_name).tenants.create([Tenant(name=tenant)])
            self._known_tenants.add(tenant)
        return tenant

    # -- reads and writes ---------------------------------------------------------------------------------------

    def _query(self, handle: Any, s: ResolvedSearch, vector: list[float] | None) -> list[tuple[dict, float]]:
        from weaviate.classes.query import HybridFusion, MetadataQuery

        common: dict[str, Any] = {"limit": s.k, "filters": _filters(s), "return_properties": PROPERTIES}
        if s.mode == "vector":
            result = handle.query.near_vector(
                vector, target_vector=VECTOR_NAME, return_metadata=MetadataQuery(distance=True), **common
            )
            return [(o.properties, 1.0 - float(o.metadata.distance)) for o in result.objects]
        if s.mode == "keyword":
            result = handle.query.bm25(
                s.query, query_properties=["text"], return_metadata=MetadataQuery(score=True), **common
            )
        else:
            result = handle.query.hybrid(
                s.query,
                vector=vector,
                alpha=s.alpha,
                query_properties=["text"],
                fusion_type=HybridFusion.RELATIVE_SCORE,
                target_vector=VECTOR_NAME,
                return_metadata=MetadataQuery(score=True),
                **common,
            )
        return [(o.properties, float(o.metadata.score or 0.0)) for o in result.objects]

    def _write(self, handle: Any, doc: DocumentVersion, vectors: list[list[float]]) -> None:
        """Upsert the new chunks (by uuid), drop this version's stale chunks, then fix other versions' valid_to."""
        from weaviate.classes.data import DataObject
        from weaviate.classes.query import Filter
        from weaviate.util import generate_uuid5

        stored = handle.query.fetch_objects(
            filters=Filter.by_property("doc_id").equal(doc.doc_id),
            limit=MAX_VERSIONS_ROWS,
            return_properties=["chunk_id", "version", "effective_date", "valid_to"],
        ).objects
        if len(stored) >= MAX_VERSIONS_ROWS:
            raise BackendUnavailableError(f"document {doc.doc_id!r} has over {MAX_VERSIONS_ROWS} stored chunks")
        effective = {int(o.properties["version"]): o.properties["effective_date"].date() for o in stored}
        valid_to = valid_to_by_version(effective | {doc.version: doc.effective_date})
        new_valid_to = _moment(stored_valid_to(valid_to[doc.version]))
        objects = [
            DataObject(
                properties=_properties(chunk, new_valid_to),
                uuid=generate_uuid5(chunk.chunk_id),
                vector={VECTOR_NAME: vector},
            )
            for chunk, vector in zip(doc.chunks, vectors, strict=True)
        ]
        result = handle.data.insert_many(objects)
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise BackendUnavailableError(f"{len(result.errors)} of {len(objects)} chunks failed: {first.message}")
        new_ids = {chunk.chunk_id for chunk in doc.chunks}
        stale = [
            o.uuid
            for o in stored
            if int(o.properties["version"]) == doc.version and o.properties["chunk_id"] not in new_ids
        ]
        if stale:
            handle.data.delete_many(where=Filter.by_id().contains_any(stale))
        for o in stored:
            version = int(o.properties["version"])
            wanted = _moment(stored_valid_to(valid_to[version]))
            if version != doc.version and o.properties["valid_to"] != wanted:
                handle.data.update(uuid=o.uuid, properties={"valid_to": wanted})


def _properties(chunk: Chunk, valid_to: datetime) -> dict[str, Any]:
    props: dict[str, Any] = {name: getattr(chunk, name) for name in (*_FIELD_PROPERTIES, *_TEXT_PROPERTIES)}
    return props | {
        "version": chunk.version,
        "ordinal": chunk.ordinal,
        "effective_date": _moment(chunk.effective_date),
        "valid_to": valid_to,
    }


def _filters(s: ResolvedSearch) -> Any:
    """Tenant (again, inside the tenant's own shard), validity on as_of, then the optional line/doc_type lists."""
    from weaviate.classes.query import Filter

    as_of = _moment(s.as_of)
    parts = [
        Filter.by_property("tenant").equal(s.tenant),
        Filter.by_property("effective_date").less_or_equal(as_of),
        Filter.by_property("valid_to").greater_than(as_of),
    ]
    if s.lines:
        parts.append(Filter.by_property("line").contains_any(list(s.lines)))
    if s.doc_types:
        parts.append(Filter.by_property("doc_type").contains_any(list(s.doc_types)))
    return Filter.all_of(parts)
