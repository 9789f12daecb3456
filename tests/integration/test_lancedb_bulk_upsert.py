"""``LanceDBRetriever.upsert_documents`` (the bulk write used by ingest and the scale benchmark) stores exactly what
one ``upsert_document`` call per document stores. Real LanceDB; a hash embedder instead of the model."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import lancedb
import pyarrow.compute as pc
import pytest

from domainroute.errors import InputError
from domainroute.retrievers.base import Chunk, SearchFilters
from domainroute.retrievers.ingest import ingest
from domainroute.retrievers.lancedb_store import SCALAR_INDEXES, TABLE_PREFIX, LanceDBRetriever
from tests.integration.test_retrieval_failure import HashEmbedder

pytestmark = pytest.mark.integration


def doc(doc_id: str, texts: list[str], *, version: int = 1, effective: date = date(2024, 1, 1)) -> list[Chunk]:
    return [
        Chunk(chunk_id=f"{doc_id}@v{version}#{i:03d}", doc_id=doc_id, version=version, ordinal=i, title=doc_id,
              section="S", text=text, line="auto", doc_type="faq", effective_date=effective, tenant="northwind")
        for i, text in enumerate(texts)
    ]


DOCS = [
    doc("glass", ["chip repair is free", "replacement costs $100"]),
    doc("glass", ["chip repair costs $25", "replacement costs $150", "recalibration included"], version=2,
        effective=date(2026, 1, 1)),
    doc("rental", ["rental pays $40 a day"]),
    doc("towing", ["towing up to $150", "four calls a year"], effective=date(2025, 6, 1)),
]


def stored(retriever: LanceDBRetriever) -> list[tuple]:
    table = lancedb.connect(retriever.path).open_table(TABLE_PREFIX + "northwind").to_arrow().sort_by("chunk_id")
    return list(zip(*(table[name].to_pylist() for name in ("chunk_id", "text", "effective_date", "valid_to")),
                    strict=True))


def test_bulk_equals_one_call_per_document(tmp_path: Path) -> None:
    one_by_one = LanceDBRetriever(tmp_path / "a", embedder=HashEmbedder())
    for chunks in DOCS:
        one_by_one.upsert_document(chunks, tenant="northwind")
    bulk = LanceDBRetriever(tmp_path / "b", embedder=HashEmbedder())
    assert bulk.upsert_documents(DOCS, tenant="northwind") == 8
    assert stored(bulk) == stored(one_by_one)
    valid_to = {row[0]: row[3] for row in stored(bulk)}
    assert valid_to["glass@v1#000"] == date(2026, 1, 1) and valid_to["glass@v2#000"] == date(9999, 12, 31)
    in_2025 = SearchFilters(as_of=date(2025, 3, 1))
    old = bulk.search("chip repair", tenant="northwind", k=3, mode="keyword", filters=in_2025)
    assert {p.version for p in old if p.doc_id == "glass"} == {1}


def test_bulk_replaces_a_version_and_drops_its_stale_chunks(tmp_path: Path) -> None:
    retriever = LanceDBRetriever(tmp_path / "s", embedder=HashEmbedder())
    retriever.upsert_documents(DOCS, tenant="northwind")
    shorter = doc("glass", ["chip repair costs $30"], version=2, effective=date(2026, 1, 1))
    retriever.upsert_documents([shorter, doc("rental", ["rental pays $50 a day"])], tenant="northwind")
    rows = {row[0]: row[1] for row in stored(retriever)}
    assert "glass@v2#001" not in rows and rows["glass@v2#000"] == "chip repair costs $30"
    assert rows["rental@v1#000"] == "rental pays $50 a day" and retriever.count(tenant="northwind") == 6


def test_bulk_rejects_a_repeated_version_and_mixed_vector_lengths(tmp_path: Path) -> None:
    retriever = LanceDBRetriever(tmp_path / "s", embedder=HashEmbedder())
    with pytest.raises(InputError, match="repeated"):
        retriever.upsert_documents([DOCS[0], DOCS[0]], tenant="northwind")
    short = [replace(c, vector=[1.0, 0.0, 0.0, 0.0]) for c in DOCS[2]]
    with pytest.raises(InputError, match="one length"):
        retriever.upsert_documents([DOCS[0], short], tenant="northwind")
    assert retriever.tenants() == []  # nothing was written
    assert retriever.upsert_documents([], tenant="northwind") == 0


def test_ingest_writes_each_tenant_in_one_bulk_call(tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    front = ("---\ndoc_id: {d}\ntitle: T\nline: auto\ndoc_type: faq\neffective_date: {e}\nversion: {v}\n"
             "tenant: {t}\n---\n")
    (kb / "a.md").write_text(front.format(d="glass", e="2024-01-01", v=1, t="northwind") + "## One\nfree chip repair\n")
    (kb / "b.md").write_text(front.format(d="glass", e="2026-01-01", v=2, t="northwind") + "## One\n$25 chip repair\n")
    (kb / "c.md").write_text(front.format(d="flood", e="2024-01-01", v=1, t="acme") + "## One\nflood covered\n")
    retriever = LanceDBRetriever(tmp_path / "s", embedder=HashEmbedder())
    calls: list[tuple[str, int]] = []
    original = retriever.upsert_documents

    def spy(documents, *, tenant):
        calls.append((tenant, len(documents)))
        return original(documents, tenant=tenant)

    retriever.upsert_documents = spy  # type: ignore[method-assign]
    report = ingest(kb, retriever, embedder=HashEmbedder(), progress=False)
    assert (report.documents, report.chunks, report.tenants) == (3, 3, ("acme", "northwind"))
    assert sorted(calls) == [("acme", 1), ("northwind", 2)]
    table = lancedb.connect(retriever.path).open_table(TABLE_PREFIX + "northwind").to_arrow()
    v1 = table.filter(pc.equal(table["version"], 1))
    assert v1["valid_to"].to_pylist() == [date(2026, 1, 1)]


def test_ann_search_parameters_are_validated(tmp_path):
    with pytest.raises(ValueError, match="nprobes and ef must be >= 1"):
        LanceDBRetriever(tmp_path / "s", embedder=HashEmbedder(), nprobes=0)
    retriever = LanceDBRetriever(tmp_path / "s", embedder=HashEmbedder(), nprobes=64, ef=128)
    assert (retriever.nprobes, retriever.ef) == (64, 128)


def test_search_builds_the_filter_indexes_and_keeps_them_current(tmp_path: Path) -> None:
    """The first search indexes the filtered columns; a write makes them stale and the next search catches up,
    with the same chunks as before (the indexes change speed, not results)."""
    retriever = LanceDBRetriever(tmp_path / "s", embedder=HashEmbedder())
    retriever.upsert_documents(DOCS, tenant="northwind")

    def indexes() -> list:  # a fresh handle each time: an open table stays at the version it was opened at
        return lancedb.connect(retriever.path).open_table(TABLE_PREFIX + "northwind").list_indices()

    assert not any(tuple(i.columns) == ("valid_to",) for i in indexes())
    in_2025 = SearchFilters(as_of=date(2025, 3, 1), lines=("auto",), doc_types=("faq",))
    first = retriever.search("chip repair", tenant="northwind", k=3, mode="hybrid", filters=in_2025)
    assert set(SCALAR_INDEXES) | {"text"} <= {i.columns[0] for i in indexes()}
    assert {p.version for p in first if p.doc_id == "glass"} == {1}

    retriever.upsert_documents([doc("hail", ["hail dents are comprehensive"])], tenant="northwind")
    found = retriever.search("hail dents", tenant="northwind", k=2, mode="keyword")
    assert found and found[0].doc_id == "hail"
    stale = [i.name for i in indexes() if i.columns[0] in SCALAR_INDEXES and i.num_unindexed_rows]
    assert stale == []
    again = retriever.search("chip repair", tenant="northwind", k=3, mode="hybrid", filters=in_2025)
    assert [p.chunk_id for p in again] == [p.chunk_id for p in first]  # BM25 scores move with the new document


def test_indexes_follow_writes_by_another_process_and_a_failed_build_does_not_fail_search(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    reader = LanceDBRetriever(tmp_path / "s", embedder=HashEmbedder())
    writer = LanceDBRetriever(tmp_path / "s", embedder=HashEmbedder())  # stands for `domainroute ingest` elsewhere
    writer.upsert_documents(DOCS, tenant="northwind")
    assert reader.search("towing", tenant="northwind", k=2, mode="vector")  # a vector search indexes too

    def stale() -> list[str]:
        table = lancedb.connect(reader.path).open_table(TABLE_PREFIX + "northwind")
        return [i.name for i in table.list_indices() if i.num_unindexed_rows]

    assert stale() == []
    writer.upsert_documents([doc("hail", ["hail dents are comprehensive"])], tenant="northwind")
    assert stale() != []  # the writer does not index; the reader's next search notices the new version
    assert reader.search("hail dents", tenant="northwind", k=1, mode="keyword")[0].doc_id == "hail"
    assert stale() == []

    monkeypatch.setitem(SCALAR_INDEXES, "no_such_column", SCALAR_INDEXES["line"])
    writer.upsert_documents([doc("flood", ["flood is excluded"])], tenant="northwind")
    with caplog.at_level("INFO", logger="domainroute.retrievers.lancedb_store"):
        found = reader.search("flood", tenant="northwind", k=1, mode="hybrid")
    assert found[0].doc_id == "flood"
    assert "no_such_column" in caplog.text and "searching without them" in caplog.text


def test_a_conflicting_first_full_text_index_build_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several processes searching a fresh store at once conflict on the index commit; the loser tries again."""
    from lancedb.table import LanceTable

    retriever = LanceDBRetriever(tmp_path / "s", embedder=HashEmbedder())
    retriever.upsert_documents(DOCS, tenant="northwind")
    real, calls = LanceTable.create_index, []

    def conflicting(self, column, *args, **kwargs):
        calls.append(column)
        if column == "text" and calls.count("text") == 1:
            raise OSError("Retryable commit conflict for version 3: CreateIndex transaction was preempted")
        return real(self, column, *args, **kwargs)

    monkeypatch.setattr(LanceTable, "create_index", conflicting)
    assert retriever.search("towing", tenant="northwind", k=1, mode="keyword")[0].doc_id == "towing"
    assert calls.count("text") == 2
