"""The Retriever contract on an embedded LanceDB folder: one table per tenant (``chunks__<tenant>``).

Scores: vector mode = cosine similarity; keyword mode = BM25; hybrid = relative score fusion in [0, 1]
(``retrievers/fusion.py``). Rows written by this instance mark the tenant's indexes stale: the full-text index and
the scalar indexes the filters use (:data:`SCALAR_INDEXES`) are rebuilt before the next search (rows not yet
indexed are still searched, only more slowly).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.expr import Expr, col, lit
from lancedb.index import FTS, Bitmap, BTree
from lancedb.table import Table

from domainroute.embeddings import ENCODER_NAME, Embedder, default_embedder, encoder_name
from domainroute.errors import BackendUnavailableError, ConfigError, InputError, RetrievalUnavailableError
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
from domainroute.retrievers.fusion import relative_score_fusion
from domainroute.schemas import Passage

log = logging.getLogger(__name__)
TABLE_PREFIX = "chunks__"
ANN_NPROBES = 20
"""IVF partitions searched when a table has a vector index (LanceDB's default)."""
ANN_EF = 30
"""HNSW candidates considered when a table has an HNSW index (LanceDB's default is 1.5 x the limit)."""
LEG_TIMEOUT_S = 30.0
"""A keyword leg that has not answered by then is a retrieval failure (the graph escalates), not a hang."""
_LEGS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lancedb-keyword-leg")
INDEX_ATTEMPTS = 3
"""Tries at building a missing full-text index (concurrent first searches in several processes conflict)."""
HYBRID_POOL = 20
"""Each hybrid leg fetches max(2k, HYBRID_POOL) candidates before fusion."""
COLUMNS = [
    "chunk_id", "doc_id", "version", "ordinal", "title", "section", "text",
    "line", "doc_type", "effective_date", "valid_to", "tenant",
]  # fmt: skip
SCALAR_INDEXES: dict[str, type[Bitmap] | type[BTree]] = {
    "tenant": Bitmap, "line": Bitmap, "doc_type": Bitmap, "effective_date": BTree, "valid_to": BTree,
}
"""Scalar indexes on the filtered columns: every search prefilters on tenant and the validity dates. At 90,000 rows
with an IVF_HNSW_SQ vector index, hybrid p50 with a line + doc type + date filter went from 22.3 to 17.6-18.0 ms
(tenant + date only: no measurable change; session 4, docs/benchmarks/retrieval_scale.md); building all five on
12 tenants / 100,000 rows took 0.2 s."""
_NOT_TEXT = {"version": pa.int32(), "ordinal": pa.int32(), "effective_date": pa.date32(), "valid_to": pa.date32()}


ENCODER_KEY = b"domainroute.encoder"
"""Schema metadata naming the encoder whose vectors a table holds (tables written before it: the shared MiniLM)."""


def table_schema(dim: int, encoder: str | None = None) -> pa.Schema:
    """One row per chunk; dates are date32 (valid_to of the newest version = OPEN_END); ``vector`` is float32[dim].
    ``encoder`` is recorded in the schema's metadata."""
    fields = [pa.field(name, _NOT_TEXT.get(name, pa.string()), nullable=False) for name in COLUMNS]
    schema = pa.schema([*fields, pa.field("vector", pa.list_(pa.float32(), dim), nullable=False)])
    return schema.with_metadata({ENCODER_KEY: encoder.encode()}) if encoder else schema


class LanceDBRetriever:
    """Tenant-isolated hybrid retrieval on a LanceDB folder; connects and loads the embedder on first use."""

    def __init__(self, path: Path, *, embedder: Embedder | None = None, nprobes: int = ANN_NPROBES,
                 ef: int = ANN_EF, filter_indexes: bool = True) -> None:
        """``nprobes`` (IVF partitions searched) and ``ef`` (HNSW candidates) apply only once a tenant's table has
        a vector index (large tenants, see benchmarks/retrieval_scale.py); exact search ignores them.
        ``filter_indexes=False`` builds only the full-text index, not :data:`SCALAR_INDEXES`."""
        if nprobes < 1 or ef < 1:
            raise ValueError(f"nprobes and ef must be >= 1, got {nprobes} and {ef}")
        self.path = Path(path)
        self.nprobes, self.ef = nprobes, ef
        self.filter_indexes = filter_indexes
        self._embedder = embedder
        self._connection: lancedb.DBConnection | None = None
        self._lock = threading.RLock()
        self._indexed: dict[str, int] = {}  # table name -> the table version whose indexes were found current

    def __repr__(self) -> str:
        return f"LanceDBRetriever({str(self.path)!r})"

    # -- the Retriever protocol ---------------------------------------------------------------------------------

    def upsert_document(self, chunks: Sequence[Chunk], *, tenant: str) -> int:
        return self.upsert_documents([chunks], tenant=tenant)

    def upsert_documents(self, documents: Sequence[Sequence[Chunk]], *, tenant: str) -> int:
        """Bulk ``upsert_document``: many document versions of one tenant in one atomic merge; return the count.

        Same rules as one call per document (each version replaces its own earlier chunks, every stored version's
        valid_to is recomputed), but one table write instead of one per document, so large ingests stay fast.
        """
        docs = [check_document(chunks, tenant=tenant) for chunks in documents]
        if not docs:
            return 0
        keys = [(doc.doc_id, doc.version) for doc in docs]
        if len(set(keys)) != len(keys):
            twice = sorted({key for key in keys if keys.count(key) > 1})
            raise InputError(f"one upsert_documents call takes each document version once; repeated: {twice}")
        vectors = [chunk_vectors(doc.chunks, self._get_embedder) for doc in docs]
        dims = {v.shape[1] for v in vectors}
        if len(dims) != 1:
            raise InputError(f"all chunk vectors in one upsert_documents call need one length, got {sorted(dims)}")
        dim = dims.pop()
        name = TABLE_PREFIX + tenant
        what = repr(docs[0].doc_id) if len(docs) == 1 else f"{len(docs)} documents"
        failure = f"could not store document {what} in LanceDB at {self.path}"
        with self._lock, backend_errors(failure, BackendUnavailableError):
            encoder = self._encoder_name()
            table = self._open(tenant)
            if table is None:
                table = self._db().create_table(name, schema=table_schema(dim, encoder), exist_ok=True)
            _check_vectors(table, dim, encoder, self.path)
            schema = table_schema(dim)
            source = _merge_source(docs, vectors, table, schema)
            by_version: dict[int, list[str]] = {}
            for doc in docs:
                by_version.setdefault(doc.version, []).append(doc.doc_id)
            these_versions = None
            for version, doc_ids in sorted(by_version.items()):
                part = (col("version") == lit(version)) & col("doc_id").isin(doc_ids)
                these_versions = part if these_versions is None else these_versions | part
            (
                table.merge_insert("chunk_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(these_versions)
                .execute(source)
            )
            self._indexed.pop(name, None)
        return sum(len(doc.chunks) for doc in docs)

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
        failure = f"could not retrieve policy documents: LanceDB at {self.path}"
        with backend_errors(failure, RetrievalUnavailableError):
            table = self._open(s.tenant)
        if table is None:
            return []
        use_vector = s.mode == "vector" or (s.mode == "hybrid" and s.alpha > 0.0)
        use_keyword = s.mode == "keyword" or (s.mode == "hybrid" and s.alpha < 1.0)
        vector = self._get_embedder().encode_one(s.query) if use_vector else None
        pool = s.k if s.mode != "hybrid" else min(max(2 * s.k, HYBRID_POOL), 100)
        with backend_errors(failure, RetrievalUnavailableError):
            if vector is not None:  # before either leg starts: vectors of another encoder compare to nothing
                _check_vectors(table, len(vector), self._encoder_name(), self.path)
            self._ensure_indexes(table)
            where = _where(s)
            # the two hybrid legs run at once: LanceDB searches in native code without the GIL
            keyword_job = _LEGS.submit(self._keyword_hits, table, s.query, where, pool) \
                if use_keyword and vector is not None else None
            vector_hits = self._vector_hits(table, vector, where, pool) if vector is not None else []
            if keyword_job is not None:
                keyword_hits = keyword_job.result(timeout=LEG_TIMEOUT_S)
            else:
                keyword_hits = self._keyword_hits(table, s.query, where, pool) if use_keyword else []
        if s.mode == "hybrid":
            ranked = relative_score_fusion(vector_hits, keyword_hits, alpha=s.alpha, k=s.k)
        else:
            ranked = [(row, score) for _, row, score in (vector_hits or keyword_hits)]
        return [passage_from_row(row, tenant=s.tenant, score=score) for row, score in ranked]

    def count(self, *, tenant: str) -> int:
        validate_tenant(tenant)
        with backend_errors(f"could not read LanceDB at {self.path}", RetrievalUnavailableError):
            table = self._open(tenant)
            return 0 if table is None else table.count_rows()

    def stored_encoder(self, tenant: str) -> str | None:
        """The encoder whose vectors the tenant's table holds (None: no table yet)."""
        validate_tenant(tenant)
        with backend_errors(f"could not read LanceDB at {self.path}", RetrievalUnavailableError):
            table = self._open(tenant)
            return None if table is None else _table_encoder(table.schema)

    def reembed(self, tenant: str, *, progress: bool = False) -> int:
        """Recompute every stored vector of the tenant with this retriever's encoder (after the encoder changed:
        ``domainroute ingest`` calls it); returns the number of chunks. The rows' text and metadata are kept; the
        table is replaced in one LanceDB version, so a run that stops half-way leaves the old table as it was, and
        a table another process wrote to meanwhile is left alone (an error: run it again). A vector index built on
        the table is dropped with the old vectors (rebuild it; the full-text and filter indexes come back by
        themselves)."""
        from domainroute.retrievers.ingest import embedding_text_of

        validate_tenant(tenant)
        with self._lock, backend_errors(f"could not re-embed tenant {tenant!r} in LanceDB at {self.path}",
                                        BackendUnavailableError):
            table = self._open(tenant)
            if table is None:
                return 0
            version = table.version
            data = table.to_arrow()
            texts = [embedding_text_of(line, text) for line, text in
                     zip(data["line"].to_pylist(), data["text"].to_pylist(), strict=True)]
            embedder = self._get_embedder()
            dim = int(getattr(embedder, "dim", 0)) or int(data.schema.field("vector").type.list_size)
            vectors = np.asarray(embedder.encode(texts, progress=progress), dtype=np.float32).reshape(len(texts), dim)
            schema = table_schema(dim, self._encoder_name())
            column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
            rows = data.drop_columns(["vector"]).append_column("vector", column).select(schema.names)
            table.checkout_latest()
            if table.version != version:
                raise BackendUnavailableError(f"tenant {tenant!r} in LanceDB at {self.path} changed while it was "
                                              "being re-embedded; nothing was replaced: run `domainroute ingest` again")
            self._db().create_table(table.name, data=rows.cast(schema), schema=schema, mode="overwrite")
            self._indexed.pop(table.name, None)
            return len(texts)

    def tenants(self) -> list[str]:
        with backend_errors(f"could not read LanceDB at {self.path}", RetrievalUnavailableError):
            names = self._table_names()
        return sorted(n.removeprefix(TABLE_PREFIX) for n in names if n.startswith(TABLE_PREFIX))

    def healthy(self) -> bool:
        """True when the folder opens and lists its tables; False (never raises) otherwise."""
        try:
            self.tenants()
        except RetrievalUnavailableError:
            return False
        return True

    def close(self) -> None:
        """Forget the connection (LanceDB holds no server resources); the next call reconnects."""
        with self._lock:
            self._connection = None
            self._indexed.clear()

    # -- internals ----------------------------------------------------------------------------------------------

    def _get_embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    def _encoder_name(self) -> str:
        return encoder_name(self._get_embedder())

    def _db(self) -> lancedb.DBConnection:
        with self._lock:
            if self._connection is None:
                self._connection = lancedb.connect(self.path)
            return self._connection

    def _table_names(self) -> list[str]:
        names: list[str] = []
        page_token = None
        while True:
            response = self._db().list_tables(page_token=page_token)
            names.extend(response.tables)
            page_token = response.page_token
            if not page_token:
                return names

    def _open(self, tenant: str) -> Table | None:
        name = TABLE_PREFIX + tenant
        return self._db().open_table(name) if name in self._table_names() else None

    def _vector_hits(self, table: Table, vector: np.ndarray, where: Expr, limit: int) -> list[tuple[str, dict, float]]:
        rows = (
            table.search(vector.tolist(), query_type="vector", vector_column_name="vector")
            .distance_type("cosine")
            .nprobes(self.nprobes)
            .ef(max(self.ef, limit))
            .where(where, prefilter=True)
            .select([*COLUMNS, "_distance"])
            .limit(limit)
            .to_list()
        )
        return [(row["chunk_id"], row, 1.0 - float(row["_distance"])) for row in rows]

    def _keyword_hits(self, table: Table, query: str, where: Expr, limit: int) -> list[tuple[str, dict, float]]:
        rows = (
            table.search(query, query_type="fts", fts_columns="text")
            .where(where, prefilter=True)
            .select([*COLUMNS, "_score"])
            .limit(limit)
            .to_list()
        )
        return [(row["chunk_id"], row, float(row["_score"])) for row in rows]

    def _ensure_indexes(self, table: Table) -> None:
        """Bring the tenant's indexes (full text, filters) up to the table's version, once per version.

        Keyed by version, so writes by another process (``domainroute ingest`` beside a running server) and writes
        that land between opening the table and this check are caught by the next search. An index that cannot be
        built (a commit conflict with another process, a read-only store) is logged and retried on the next search;
        the search goes on, since rows without an index are still searched, only more slowly.
        """
        if self._indexed.get(table.name) == table.version:
            return
        with self._lock:
            if self._indexed.get(table.name) == table.version:
                return
            failed = ensure_indexes(table, filters=self.filter_indexes)
            if failed:
                log.info("LanceDB table %s: could not build index(es) on %s; searching without them",
                         table.name, ", ".join(failed))
            else:
                self._indexed[table.name] = table.version


def ensure_indexes(table: Table, *, filters: bool = True) -> list[str]:
    """Create the full-text index on ``text`` and (``filters``) the :data:`SCALAR_INDEXES` where missing or behind
    the data. Returns the columns whose index could not be built; see :func:`_build_full_text` for the one error."""
    indices = {i.columns[0]: i for i in table.list_indices() if len(i.columns) == 1}

    def stale(column: str) -> bool:
        return column not in indices or bool(indices[column].num_unindexed_rows)

    failed = [] if not stale("text") or _build_full_text(table, exists="text" in indices) else ["text"]
    for column, kind in SCALAR_INDEXES.items() if filters else ():
        if stale(column):
            try:
                table.create_index(column, config=kind(), replace=True)
            except Exception:  # noqa: BLE001 - LanceDB raises several types; the search works without the index
                failed.append(column)
    return failed


def _build_full_text(table: Table, *, exists: bool) -> bool:
    """(Re)build the full-text index; False if a stale one could not be rebuilt (keyword search still works on it).

    A missing one is required by keyword search: a failed build (most often a commit conflict with another process
    indexing the same table) is tried :data:`INDEX_ATTEMPTS` times, then raised.
    """
    for attempt in range(1, INDEX_ATTEMPTS + 1):
        try:
            table.create_index("text", config=FTS(), replace=True)
            return True
        except Exception:  # noqa: BLE001 - as above
            if exists:
                return False
            if attempt == INDEX_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)
            table.checkout_latest()
            if any(list(i.columns) == ["text"] for i in table.list_indices()):
                return True  # the other process built it
    return False


def _merge_source(
    docs: Sequence[DocumentVersion], vectors: Sequence[np.ndarray], table: Table, schema: pa.Schema
) -> pa.Table:
    """The new versions' rows plus the stored rows of other versions whose valid_to changes: one atomic merge."""
    doc_ids = sorted({doc.doc_id for doc in docs})
    stored = table.search().where(col("doc_id").isin(doc_ids)).select(schema.names).limit(None).to_arrow()
    incoming = {(doc.doc_id, doc.version) for doc in docs}
    stored_keys = list(zip(stored["doc_id"].to_pylist(), stored["version"].to_pylist(), strict=True))
    others = stored.filter(pa.array([key not in incoming for key in stored_keys], type=pa.bool_()))
    effective: dict[str, dict[int, date]] = {}
    for doc_id, version, day in zip(
        others["doc_id"].to_pylist(), others["version"].to_pylist(), others["effective_date"].to_pylist(), strict=True
    ):
        effective.setdefault(doc_id, {})[version] = day
    for doc in docs:
        effective.setdefault(doc.doc_id, {})[doc.version] = doc.effective_date
    valid_to = {doc_id: valid_to_by_version(versions) for doc_id, versions in effective.items()}
    new_rows = pa.Table.from_pylist(
        [
            _row(chunk, vector, stored_valid_to(valid_to[doc.doc_id][doc.version]))
            for doc, doc_vectors in zip(docs, vectors, strict=True)
            for chunk, vector in zip(doc.chunks, doc_vectors.tolist(), strict=True)
        ],
        schema=schema,
    )
    wanted = pa.array(
        [
            stored_valid_to(valid_to[doc_id][version])
            for doc_id, version in zip(others["doc_id"].to_pylist(), others["version"].to_pylist(), strict=True)
        ],
        type=pa.date32(),
    )
    moved = others.set_column(others.schema.get_field_index("valid_to"), "valid_to", wanted)
    return pa.concat_tables([new_rows, moved.filter(pc.not_equal(others["valid_to"], wanted)).cast(schema)])


def _row(chunk: Chunk, vector: list[float], valid_to: date) -> dict[str, Any]:
    return {name: getattr(chunk, name) for name in COLUMNS if name != "valid_to"} | {
        "valid_to": valid_to,
        "vector": vector,
    }


def _where(s: ResolvedSearch) -> Expr:
    """Tenant (again, inside the tenant's own table), validity on as_of, then the optional line/doc_type lists."""
    where = col("tenant") == lit(s.tenant)
    where = where & (col("effective_date") <= lit(s.as_of)) & (col("valid_to") > lit(s.as_of))
    if s.lines:
        where = where & col("line").isin(list(s.lines))
    if s.doc_types:
        where = where & col("doc_type").isin(list(s.doc_types))
    return where


def _table_encoder(schema: pa.Schema) -> str:
    return (schema.metadata or {}).get(ENCODER_KEY, ENCODER_NAME.encode()).decode()


def _check_vectors(table: Table, dim: int, encoder: str, path: Path) -> None:
    """ConfigError when the table's vectors have another length, or come from another encoder than the one
    embedding now (one schema read: every search with a vector calls this)."""
    schema = table.schema
    stored = schema.field("vector").type.list_size
    if stored != dim:
        raise ConfigError(
            f"vectors have {dim} dimensions but LanceDB table {table.name!r} stores {stored}: "
            "it was built with another embedder; re-ingest into a fresh store"
        )
    stored_encoder = _table_encoder(schema)
    if stored_encoder != encoder:
        raise ConfigError(
            f"LanceDB table {table.name!r} in {path} holds vectors of encoder {stored_encoder!r}, but this "
            f"configuration embeds with {encoder!r}: their similarities mean nothing to each other. Run "
            "`domainroute ingest` (it re-embeds the stored chunks with the current encoder first)"
        )
