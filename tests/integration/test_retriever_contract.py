"""The Retriever contract, run against every backend: LanceDB always, Weaviate when WEAVIATE_URL is set.

Real embeddings (all-MiniLM-L6-v2), real stores, small hand-written insurance chunks.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from domainroute.embeddings import Embedder, default_embedder
from domainroute.errors import ConfigError, InputError, RetrievalUnavailableError
from domainroute.retrievers import make_retriever
from domainroute.retrievers.base import Chunk, Retriever, SearchFilters
from domainroute.retrievers.filters import MAX_K
from domainroute.retrievers.lancedb_store import LanceDBRetriever

WEAVIATE_SKIP = (
    "WEAVIATE_URL not set: start Weaviate with `docker compose up weaviate` "
    "and export WEAVIATE_URL=http://127.0.0.1:8080"
)
MODES = ("vector", "keyword", "hybrid")


def doc(
    doc_id: str,
    texts: list[str],
    *,
    line: str,
    doc_type: str,
    effective: date,
    version: int = 1,
    tenant: str = "northwind",
) -> list[Chunk]:
    return [
        Chunk(
            chunk_id=f"{doc_id}@v{version}#{ordinal:03d}",
            doc_id=doc_id,
            version=version,
            ordinal=ordinal,
            title=doc_id.replace("-", " ").title(),
            section=f"Section {ordinal + 1}",
            text=text,
            line=line,
            doc_type=doc_type,
            effective_date=effective,
            tenant=tenant,
        )
        for ordinal, text in enumerate(texts)
    ]


GLASS_V1 = doc(
    "auto-glass",
    [
        "Windshield chip repair is paid in full with no deductible under comprehensive coverage.",
        "Windshield replacement carries a $100 glass deductible.",
    ],
    line="auto", doc_type="policy_wording", effective=date(2024, 1, 1),
)  # fmt: skip
GLASS_V2 = doc(
    "auto-glass",
    [
        "From 2026 windshield chip repair costs a $25 deductible under comprehensive coverage.",
        "Windshield replacement now carries a $150 glass deductible.",
        "Recalibrating the windshield camera after replacement is included.",
    ],
    line="auto", doc_type="policy_wording", effective=date(2026, 1, 1), version=2,
)  # fmt: skip
FLOOD = doc(
    "home-flood",
    ["Flood damage from rising surface water is excluded unless you bought the flood endorsement."],
    line="home", doc_type="policy_wording", effective=date(2023, 1, 1),
)  # fmt: skip
ROOF = doc(
    "home-roof-faq",
    ["Roof leaks caused by storm wind or hail are covered; gradual wear and tear is not."],
    line="home", doc_type="faq", effective=date(2023, 1, 1),
)  # fmt: skip
LATE_FEE = doc(
    "billing-late-fee",
    ["A late payment fee of $15 applies when the premium is more than 10 days overdue."],
    line="billing", doc_type="notice", effective=date(2023, 1, 1),
)  # fmt: skip
DENTAL = doc(
    "health-dental-faq",
    ["Routine dental cleanings are covered twice a year at no cost to you."],
    line="health", doc_type="faq", effective=date(2023, 1, 1),
)  # fmt: skip
NORTHWIND = [GLASS_V1, GLASS_V2, FLOOD, ROOF, LATE_FEE, DENTAL]
ACME_FLOOD = doc(
    "acme-flood",
    ["Acme covers flood damage to your basement up to $10,000 after a $1,000 deductible."],
    line="home", doc_type="policy_wording", effective=date(2023, 1, 1), tenant="acme",
)  # fmt: skip


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    import torch

    # One intra-op thread: on a busy 2-core machine two threads make every small encode ~25x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield default_embedder()
    finally:
        torch.set_num_threads(threads)


def _weaviate_store(embedder: Embedder) -> Iterator[Retriever]:
    url = os.environ.get("WEAVIATE_URL")
    if not url:
        pytest.skip(WEAVIATE_SKIP)
    weaviate = pytest.importorskip("weaviate", reason="pip install 'domainroute[weaviate]'")
    from domainroute.retrievers.weaviate_store import WeaviateRetriever

    grpc_port = int(os.environ.get("WEAVIATE_GRPC_PORT", "50051"))
    collection = f"DomainrouteTest{uuid.uuid4().hex[:10]}"  # one per test: no state leaks between cases
    store = WeaviateRetriever(url, embedder=embedder, collection=collection, grpc_port=grpc_port)
    try:
        yield store
    finally:
        store.close()
        parts = urlsplit(url)
        with weaviate.connect_to_local(host=parts.hostname, port=parts.port or 8080, grpc_port=grpc_port) as client:
            client.collections.delete(collection)


@pytest.fixture(
    params=[
        pytest.param("lancedb", marks=pytest.mark.integration),
        pytest.param("weaviate", marks=pytest.mark.live),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path, embedder: Embedder) -> Iterator[Retriever]:
    if request.param == "lancedb":
        yield LanceDBRetriever(tmp_path / "lancedb", embedder=embedder)
    else:
        yield from _weaviate_store(embedder)


@pytest.fixture
def loaded(store: Retriever) -> Retriever:
    for chunks in NORTHWIND:
        store.upsert_document(chunks, tenant="northwind")
    store.upsert_document(ACME_FLOOD, tenant="acme")
    return store


def ids(passages: list) -> list[str]:
    return [p.chunk_id for p in passages]


def test_store_implements_the_protocol(store: Retriever) -> None:
    assert isinstance(store, Retriever)


@pytest.mark.parametrize("mode", MODES)
def test_obvious_query_ranks_the_right_chunk_first(loaded: Retriever, mode: str) -> None:
    cases = {
        "is flood damage from rising water covered": "home-flood@v1#000",
        "late payment fee when my premium is overdue": "billing-late-fee@v1#000",
        "are dental cleanings covered": "health-dental-faq@v1#000",
    }
    for query, expected in cases.items():
        found = loaded.search(query, tenant="northwind", k=3, mode=mode)
        assert found, query
        assert found[0].chunk_id == expected, (query, ids(found))
        assert all(p.tenant == "northwind" for p in found)
    top = loaded.search("is flood damage from rising water covered", tenant="northwind", k=1, mode=mode)[0]
    assert (top.doc_id, top.line, top.doc_type, top.effective_date, top.version) == (
        "home-flood", "home", "policy_wording", "2023-01-01", 1
    )  # fmt: skip
    assert top.text == FLOOD[0].text and top.title == FLOOD[0].title and top.section == FLOOD[0].section


def test_reupsert_of_the_same_version_does_not_duplicate(loaded: Retriever) -> None:
    before = loaded.count(tenant="northwind")
    assert before == sum(len(chunks) for chunks in NORTHWIND)
    assert loaded.upsert_document(GLASS_V2, tenant="northwind") == len(GLASS_V2)
    assert loaded.count(tenant="northwind") == before
    assert len(loaded.search("windshield replacement", tenant="northwind", k=20, mode="keyword")) == len(GLASS_V2)

    shorter = GLASS_V2[:2]  # a re-ingest with fewer chunks drops the stale one
    loaded.upsert_document(shorter, tenant="northwind")
    assert loaded.count(tenant="northwind") == before - 1
    assert "auto-glass@v2#002" not in ids(loaded.search("windshield camera", tenant="northwind", k=10))


def test_new_rows_are_found_by_keyword_search_after_a_write(loaded: Retriever) -> None:
    assert loaded.search("hailstorm", tenant="northwind", k=5, mode="keyword") == []
    hail = doc("home-hail", ["A hailstorm that dents siding is a covered peril."], line="home", doc_type="faq",
               effective=date(2023, 1, 1))  # fmt: skip
    loaded.upsert_document(hail, tenant="northwind")
    assert ids(loaded.search("hailstorm", tenant="northwind", k=5, mode="keyword")) == ["home-hail@v1#000"]


@pytest.mark.parametrize("mode", MODES)
def test_tenants_are_isolated(loaded: Retriever, mode: str) -> None:
    northwind_only = SearchFilters(lines=("home", "auto", "billing", "health"), doc_types=("faq", "notice"))
    found = loaded.search("late payment fee for an overdue premium", tenant="acme", k=10, filters=northwind_only,
                          mode=mode)  # fmt: skip
    assert found == []
    found = loaded.search("flood damage", tenant="acme", k=10, mode=mode)
    assert ids(found) == ["acme-flood@v1#000"] and found[0].tenant == "acme"
    assert "acme-flood@v1#000" not in ids(loaded.search("flood damage basement", tenant="northwind", k=10, mode=mode))
    assert loaded.search("flood damage", tenant="globex", k=5, mode=mode) == []
    assert loaded.count(tenant="globex") == 0
    assert loaded.tenants() == ["acme", "northwind"]


def test_line_and_doc_type_filters(loaded: Retriever) -> None:
    query = "what is covered and what does it cost"
    for mode in MODES:
        home = loaded.search(query, tenant="northwind", k=10, filters=SearchFilters(lines=("home",)), mode=mode)
        assert home and {p.line for p in home} == {"home"}, mode
        faqs = loaded.search(query, tenant="northwind", k=10, filters=SearchFilters(doc_types=("faq",)), mode=mode)
        assert faqs and {p.doc_type for p in faqs} <= {"faq"}, mode
        both = SearchFilters(lines=("home", "billing"), doc_types=("notice",))
        assert {p.doc_id for p in loaded.search("fee", tenant="northwind", k=10, filters=both, mode=mode)} <= {
            "billing-late-fee"
        }
    everything = loaded.search(query, tenant="northwind", k=20, mode="vector")
    assert {p.line for p in everything} == {"auto", "home", "billing", "health"}


@pytest.mark.parametrize("mode", MODES)
def test_versions_follow_the_as_of_date(loaded: Retriever, mode: str) -> None:
    query = "windshield chip repair deductible"
    only_glass = SearchFilters(lines=("auto",))

    def versions(as_of: date | None) -> set[int]:
        filters = replace(only_glass, as_of=as_of)
        found = loaded.search(query, tenant="northwind", k=10, filters=filters, mode=mode)
        return {p.version for p in found if p.doc_id == "auto-glass"}

    assert versions(date(2025, 6, 1)) == {1}
    assert versions(date(2026, 6, 1)) == {2}
    assert versions(None) == {2}  # today (on or after 2026-01-01)
    assert versions(date(2023, 6, 1)) == set()  # before v1 took effect
    assert versions(date(2026, 1, 1)) == {2}  # v1's valid_to is exclusive
    assert versions(date(2025, 12, 31)) == {1}


def test_versions_ingested_out_of_order_get_the_same_windows(store: Retriever) -> None:
    store.upsert_document(GLASS_V2, tenant="northwind")
    store.upsert_document(GLASS_V1, tenant="northwind")
    store.upsert_document(GLASS_V1, tenant="northwind")  # re-ingesting the old version keeps its window closed
    for as_of, expected in ((date(2025, 6, 1), {1}), (date(2026, 6, 1), {2})):
        found = store.search("windshield", tenant="northwind", k=10, filters=SearchFilters(as_of=as_of))
        assert {p.version for p in found} == expected, as_of


def test_alpha_extremes_equal_the_single_modes(loaded: Retriever) -> None:
    for query in ("windshield replacement deductible", "flood damage covered", "premium overdue fee"):
        vector = ids(loaded.search(query, tenant="northwind", k=4, mode="vector"))
        keyword = ids(loaded.search(query, tenant="northwind", k=4, mode="keyword"))
        assert ids(loaded.search(query, tenant="northwind", k=4, mode="hybrid", alpha=1.0)) == vector, query
        assert ids(loaded.search(query, tenant="northwind", k=4, mode="hybrid", alpha=0.0)) == keyword, query


def test_k_is_capped(store: Retriever, embedder: Embedder) -> None:
    texts = [f"Endorsement clause {i} lists a covered accessory for the insured vehicle." for i in range(MAX_K + 5)]
    filler = doc("auto-accessories", texts, line="auto", doc_type="endorsement", effective=date(2023, 1, 1))
    vectors = embedder.encode([c.text for c in filler])  # chunks may arrive with vectors already set
    store.upsert_document([replace(c, vector=v.tolist()) for c, v in zip(filler, vectors, strict=True)],
                          tenant="northwind")  # fmt: skip
    for mode in MODES:
        assert len(store.search("covered accessory endorsement", tenant="northwind", k=500, mode=mode)) == MAX_K


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filters": SearchFilters(lines=("auto' OR 1=1 --",))}, "line"),
        ({"filters": SearchFilters(doc_types=("Policy Wording",))}, "doc_type"),
        ({"filters": SearchFilters(lines="auto")}, "lines"),
        ({"tenant": "north wind"}, "tenant"),
        ({"tenant": "../etc"}, "tenant"),
        ({"k": 0}, "k"),
        ({"alpha": 1.5}, "alpha"),
        ({"mode": "fuzzy"}, "mode"),
        ({"query": "   "}, "query"),
    ],
)
def test_bad_arguments_raise_input_error(loaded: Retriever, kwargs: dict, message: str) -> None:
    args = {"query": "flood", "tenant": "northwind", "k": 3} | kwargs
    with pytest.raises(InputError, match=message):
        loaded.search(**args)


def test_bad_chunks_raise_input_error(store: Retriever) -> None:
    with pytest.raises(InputError, match="tenant"):
        store.upsert_document(ACME_FLOOD, tenant="northwind")
    with pytest.raises(InputError, match="one document version"):
        store.upsert_document([*GLASS_V1, *GLASS_V2], tenant="northwind")
    with pytest.raises(InputError, match="doc_type"):
        store.upsert_document([replace(FLOOD[0], doc_type="Policy")], tenant="northwind")
    with pytest.raises(InputError, match="chunk_id"):
        store.upsert_document([replace(FLOOD[0], chunk_id="flood-1")], tenant="northwind")
    assert store.count(tenant="northwind") == 0


@pytest.mark.integration
def test_a_store_path_that_is_a_file_is_unavailable(tmp_path: Path, embedder: Embedder) -> None:
    path = tmp_path / "not-a-folder"
    path.write_text("this is a file")
    store = LanceDBRetriever(path, embedder=embedder)
    with pytest.raises(RetrievalUnavailableError, match="could not retrieve policy documents"):
        store.search("flood", tenant="northwind", k=3)
    with pytest.raises(RetrievalUnavailableError):
        store.count(tenant="northwind")
    assert store.healthy() is False


@pytest.mark.integration
def test_an_unreachable_weaviate_is_unavailable(embedder: Embedder) -> None:
    pytest.importorskip("weaviate", reason="pip install 'domainroute[weaviate]'")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = make_retriever("weaviate", weaviate_url=f"http://127.0.0.1:{port}", embedder=embedder)
    with pytest.raises(RetrievalUnavailableError, match="unreachable"):
        store.search("flood", tenant="northwind", k=3)
    assert store.healthy() is False


@pytest.mark.integration
def test_make_retriever(tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    lance = make_retriever("lancedb", store_path=tmp_path / "s", weaviate_url=None, embedder=embedder)
    assert isinstance(lance, LanceDBRetriever) and isinstance(lance, Retriever)
    with pytest.raises(ConfigError, match="known: lancedb, weaviate"):
        make_retriever("chroma", store_path=tmp_path, weaviate_url=None)
    with pytest.raises(ConfigError, match="store_path"):
        make_retriever("lancedb", store_path=None, weaviate_url=None)
    with pytest.raises(ConfigError, match="weaviate_url"):
        make_retriever("weaviate", store_path=None, weaviate_url=None)
    with pytest.raises(ConfigError, match="http://host:8080"):
        make_retriever("weaviate", store_path=None, weaviate_url="127.0.0.1:8080")
    monkeypatch.setitem(sys.modules, "weaviate", None)  # as if the optional extra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'domainroute\[weaviate\]'"):
        make_retriever("weaviate", store_path=None, weaviate_url="http://127.0.0.1:8080")
