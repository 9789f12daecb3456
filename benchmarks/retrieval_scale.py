"""Retrieval at scale: ingestion throughput, index build time and hybrid query latency on N synthetic chunks.

The corpus is realistic text, not random vectors: documents are recombined from the sentences of the bundled
knowledge base, with other insurer names, perturbed amounts, deadlines, phone and form numbers, many tenants, all
five lines, every document type, effective dates from 2019 to 2026 and second versions for some documents.

    .venv/bin/python benchmarks/retrieval_scale.py                       # 100,000 chunks, LanceDB, report to docs/
    .venv/bin/python benchmarks/retrieval_scale.py --n 5000 --vectors composed --out /tmp/scale.md   # quick check
    WEAVIATE_URL=http://127.0.0.1:8080 .venv/bin/python benchmarks/retrieval_scale.py  # also Weaviate

Vectors: ``--vectors model`` (default) embeds every chunk with the project's encoder, as ``domainroute ingest`` does;
that is the slow part on a CPU and is timed on its own. ``--vectors composed`` embeds each knowledge-base sentence
once and gives a chunk the normalised mean of its sentences' vectors (same model, same geometry, minutes instead of
an hour on 2 cores); the model's own throughput is then measured on ``--embed-sample`` chunks and extrapolated.
Query latency excludes query embedding (queries are encoded before timing); embedding one query is timed apart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from domainroute.embeddings import BATCH_SIZE, Embedder  # noqa: E402
from domainroute.retrievers.base import Chunk, SearchFilters  # noqa: E402
from domainroute.retrievers.evaluation import EVAL_NAME, MemoEmbedder, load_eval_set  # noqa: E402
from domainroute.retrievers.ingest import embedding_text, load_chunks  # noqa: E402
from domainroute.retrievers.lancedb_store import ANN_EF, ANN_NPROBES  # noqa: E402
from domainroute.settings import BUNDLED_PACK, Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
INSURERS = ["Bluecrest Mutual", "Lakeside Assurance", "Summit Casualty", "Prairie Insurance", "Granite Mutual",
            "Cedar Assurance", "Riverbend Insurance", "Keystone Casualty", "Pioneer Mutual", "Meridian Assurance",
            "Juniper Insurance", "Oakline Mutual", "Sterling Casualty", "Bayview Assurance", "Redwood Insurance",
            "Copper Mutual"]
LINE_WEIGHTS = {"auto": 0.25, "home": 0.25, "health": 0.25, "billing": 0.18, "general": 0.07}
OWN_NAMES = re.compile(r"Northwind Insurance Company|Northwind Health Plan|Harbor Mutual|Harbor Insurance Company|"
                       r"Northwind|Harbor")
MONEY = re.compile(r"\$(\d{1,3}(?:,\d{3})*|\d+)(?:\.\d\d)?")
PERIOD = re.compile(r"\b(\d{1,3}) (calendar days|business days|days|hours|months|weeks)\b")
PHONE = re.compile(r"1-800-555-01\d\d")
FORM = re.compile(r"\bNW-([A-Z]{1,2})(\d{1,3})\b")
SENTENCE = re.compile(r"(?<=[.;:!?])\s+(?=[A-Z(0-9\"])")
FILTERED = SearchFilters(lines=("auto", "general"), doc_types=("policy_wording", "faq"), as_of=date(2025, 6, 1))


@dataclass(frozen=True)
class Source:
    """One knowledge-base chunk, split into sentences (indices into the global sentence list)."""

    line: str
    doc_type: str
    title: str
    heading: str
    sentences: tuple[int, ...]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def load_sources(kb: Path) -> tuple[list[Source], list[str]]:
    sentences: list[str] = []
    index: dict[str, int] = {}
    sources = []
    for chunk in load_chunks(kb):
        body = chunk.text.split("\n", 1)[1] if "\n" in chunk.text else chunk.text
        ids = []
        for sentence in SENTENCE.split(" ".join(body.split())):
            if len(sentence.split()) >= 4:
                ids.append(index.setdefault(sentence, len(index)))
                if ids[-1] == len(sentences):
                    sentences.append(sentence)
        if ids:
            sources.append(Source(chunk.line, chunk.doc_type, OWN_NAMES.sub("", chunk.title).strip(),
                                  chunk.section, tuple(ids)))
    return sources, sentences


class Perturber:
    """Rewrites a knowledge-base sentence for another insurer with other figures."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def money(self, match: re.Match) -> str:
        value = float(match.group(1).replace(",", "")) * self.rng.choice([0.5, 0.75, 0.8, 1.0, 1.2, 1.25, 1.5, 2.0])
        step = 5 if value < 100 else 25 if value < 1000 else 250 if value < 20000 else 5000
        return f"${max(step, round(value / step) * step):,.0f}"

    def period(self, match: re.Match) -> str:
        value = max(1, int(int(match.group(1)) * self.rng.choice([0.5, 0.75, 1.0, 1.0, 1.5, 2.0])))
        return f"{value} {match.group(2)}"

    def __call__(self, sentence: str, insurer: str, prefix: str) -> str:
        text = OWN_NAMES.sub(insurer, sentence)
        text = MONEY.sub(self.money, text)
        text = PERIOD.sub(self.period, text)
        text = PHONE.sub(lambda _: f"1-800-555-{self.rng.randint(100, 9999):04d}", text)
        return FORM.sub(lambda m: f"{prefix}-{m.group(1)}{self.rng.randint(1, 99)}", text)


@dataclass
class Corpus:
    documents: list[list[Chunk]]
    sentence_ids: dict[str, tuple[int, ...]]  # chunk_id -> template sentences (for composed vectors)
    tenants: dict[str, int]  # tenant -> chunk count

    @property
    def n(self) -> int:
        return sum(self.tenants.values())


def generate(n: int, *, tenants: int, main_share: float, seed: int, kb: Path) -> tuple[Corpus, list[str]]:
    rng = random.Random(seed)
    sources, sentences = load_sources(kb)
    by_line: dict[str, list[Source]] = defaultdict(list)
    for source in sources:
        by_line[source.line].append(source)
    perturb = Perturber(rng)
    names = [INSURERS[i % len(INSURERS)] + ("" if i < len(INSURERS) else f" {i // len(INSURERS) + 1}")
             for i in range(tenants)]
    quota = [round(n * main_share)] + [0] * (tenants - 1)
    for i in range(n - quota[0]):
        quota[1 + i % (tenants - 1) if tenants > 1 else 0] += 1
    documents: list[list[Chunk]] = []
    sentence_ids: dict[str, tuple[int, ...]] = {}
    counts: dict[str, int] = {}
    lines, weights = zip(*LINE_WEIGHTS.items(), strict=True)
    bar = tqdm(total=n, desc="generate", unit="chunk")
    for name, wanted in zip(names, quota, strict=True):
        tenant, prefix = slug(name), "".join(w[0] for w in name.split()[:2]).upper()
        made, serial = 0, 0
        while made < wanted:
            line = rng.choices(lines, weights)[0]
            template = rng.choice(by_line[line])
            serial += 1
            doc_id = f"{line}-{slug(template.title)[:40]}-{serial:06d}".strip("-")
            title = f"{name} {template.title}"
            effective = date(2019, 1, 1) + timedelta(days=rng.randrange(0, 2830))
            versions = [(1, effective)]
            if rng.random() < 0.15:  # a second version, in force from a later date
                versions.append((2, effective + timedelta(days=rng.randrange(90, 700))))
            size = rng.randint(3, 10)
            for version, day in versions:
                chunks = []
                for ordinal in range(min(size, wanted - made)):
                    source = rng.choice(by_line[line]) if ordinal else template
                    ids = list(source.sentences[: rng.randint(3, len(source.sentences))])
                    for _ in range(rng.randint(0, 2)):
                        ids.insert(rng.randrange(len(ids) + 1), rng.choice(rng.choice(by_line[line]).sentences))
                    body = " ".join(perturb(sentences[i], name, prefix) for i in ids)
                    chunk_id = f"{doc_id}@v{version}#{ordinal:03d}"
                    chunks.append(Chunk(chunk_id=chunk_id, doc_id=doc_id, version=version, ordinal=ordinal,
                                        title=title, section=source.heading, text=f"{source.heading}\n{body}",
                                        line=line, doc_type=template.doc_type, effective_date=day, tenant=tenant))
                    sentence_ids[chunk_id] = tuple(ids)
                if not chunks:
                    break
                documents.append(chunks)
                made += len(chunks)
                bar.update(len(chunks))
        counts[tenant] = made
    bar.close()
    return Corpus(documents, sentence_ids, counts), sentences


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def latency(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(samples, 50), 2), "p95_ms": round(percentile(samples, 95), 2),
            "mean_ms": round(statistics.fmean(samples), 2), "queries": len(samples)}


def embed_model(corpus: Corpus, embedder: Embedder, batch: int) -> tuple[dict[str, np.ndarray], float]:
    chunks = [c for doc in corpus.documents for c in doc]
    vectors: dict[str, np.ndarray] = {}
    started = time.perf_counter()
    with tqdm(total=len(chunks), desc="embed (model)", unit="chunk") as bar:
        for start in range(0, len(chunks), batch * 8):
            part = chunks[start:start + batch * 8]
            encoded = embedder.encode([embedding_text(c) for c in part], batch_size=batch)
            vectors.update((c.chunk_id, v) for c, v in zip(part, encoded, strict=True))
            bar.update(len(part))
    return vectors, time.perf_counter() - started


def embed_composed(corpus: Corpus, sentences: list[str], embedder: Embedder,
                   cache: Path) -> tuple[dict[str, np.ndarray], float, bool]:
    """Chunk vectors from the knowledge base's sentence vectors; also says whether those came from the cache."""
    key = hashlib.sha256("\n".join(sentences).encode()).hexdigest()[:16]
    path = cache / f"kb-sentences-{key}.npy"
    started = time.perf_counter()
    cached = path.exists()
    if cached:
        table = np.load(path)
    else:
        table = embedder.encode(sentences, progress=True)
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, table)
    vectors = {}
    for chunk_id, ids in tqdm(corpus.sentence_ids.items(), desc="compose vectors", unit="chunk"):
        mean = table[list(ids)].mean(axis=0)
        vectors[chunk_id] = (mean / np.linalg.norm(mean)).astype(np.float32)
    return vectors, time.perf_counter() - started, cached


def with_vectors(corpus: Corpus, vectors: dict[str, np.ndarray]) -> list[list[Chunk]]:
    return [[replace(c, vector=vectors[c.chunk_id]) for c in doc] for doc in corpus.documents]


def query_times(retriever: Any, queries: list[str], tenant: str, *, k: int, alpha: float, filters: SearchFilters,
                mode: str = "hybrid", warmup: int = 5) -> dict[str, float]:
    for query in queries[:warmup]:
        retriever.search(query, tenant=tenant, k=k, filters=filters, alpha=alpha, mode=mode)
    samples = []
    for query in queries:
        started = time.perf_counter()
        retriever.search(query, tenant=tenant, k=k, filters=filters, alpha=alpha, mode=mode)
        samples.append((time.perf_counter() - started) * 1000)
    return latency(samples)


def measure_queries(retriever: Any, queries: list[str], tenant: str, k: int, alpha: float) -> dict[str, Any]:
    out = {
        "hybrid, date filter only": query_times(retriever, queries, tenant, k=k, alpha=alpha, filters=SearchFilters()),
        "hybrid, line + doc type + date filter": query_times(retriever, queries, tenant, k=k, alpha=alpha,
                                                             filters=FILTERED),
        "vector leg only, date filter only": query_times(retriever, queries, tenant, k=k, alpha=alpha,
                                                  filters=SearchFilters(), mode="vector"),
        "keyword leg only, date filter only": query_times(retriever, queries, tenant, k=k, alpha=alpha,
                                                   filters=SearchFilters(), mode="keyword"),
    }
    return out


def ann_recall(retriever: Any, queries: list[str], tenant: str, exact: dict[str, list[str]], k: int = 10) -> float:
    hits = []
    for query in queries:
        got = [p.chunk_id for p in retriever.search(query, tenant=tenant, k=k, mode="vector")]
        hits.append(len(set(got) & set(exact[query])) / max(1, len(exact[query])))
    return round(statistics.fmean(hits), 4)


def run_lancedb(args: argparse.Namespace, docs: list[list[Chunk]], corpus: Corpus, queries: list[str],
                embedder: MemoEmbedder, alpha: float, folder: Path) -> dict[str, Any]:
    import lancedb
    from lancedb.index import FTS, IvfHnswSq, IvfPq

    from domainroute.retrievers.lancedb_store import SCALAR_INDEXES, TABLE_PREFIX, LanceDBRetriever, ensure_indexes

    retriever = LanceDBRetriever(folder, embedder=embedder, nprobes=args.nprobes, ef=args.ef)
    by_tenant: dict[str, list[list[Chunk]]] = defaultdict(list)
    for doc in docs:
        by_tenant[doc[0].tenant].append(doc)
    started = time.perf_counter()
    with tqdm(total=corpus.n, desc="write (LanceDB)", unit="chunk") as bar:
        for tenant, tenant_docs in by_tenant.items():
            for start in range(0, len(tenant_docs), args.batch_docs):
                batch = tenant_docs[start:start + args.batch_docs]
                bar.update(retriever.upsert_documents(batch, tenant=tenant))
    write_s = time.perf_counter() - started
    db = lancedb.connect(folder)
    tables = {tenant: db.open_table(TABLE_PREFIX + tenant) for tenant in by_tenant}
    started = time.perf_counter()
    for table in tqdm(tables.values(), desc="compact", unit="table"):
        table.optimize()
    compact_s = time.perf_counter() - started
    started = time.perf_counter()
    for table in tqdm(tables.values(), desc="FTS index", unit="table"):
        table.create_index("text", config=FTS(), replace=True)
    fts_s = time.perf_counter() - started
    started = time.perf_counter()
    for table in tqdm(tables.values(), desc="filter indexes", unit="table"):
        ensure_indexes(table)  # the scalar indexes the retriever builds itself before its first search
    scalar_s = time.perf_counter() - started
    main = max(corpus.tenants, key=corpus.tenants.__getitem__)
    small = min(corpus.tenants, key=corpus.tenants.__getitem__)
    result: dict[str, Any] = {
        "write_s": round(write_s, 1), "write_chunks_per_s": round(corpus.n / write_s, 1),
        "compact_s": round(compact_s, 1), "fts_index_s": round(fts_s, 1), "scalar_index_s": round(scalar_s, 1),
        "main_tenant": main, "main_tenant_chunks": corpus.tenants[main],
        "small_tenant": small, "small_tenant_chunks": corpus.tenants[small],
        "queries": {},
    }
    print("timing queries (exact vector search)", file=sys.stderr)
    result["queries"]["exact (no vector index)"] = measure_queries(retriever, queries, main, args.k, alpha)
    result["queries"]["exact, smallest tenant"] = {
        "hybrid, date filter only": query_times(retriever, queries, small, k=args.k, alpha=alpha,
                                                filters=SearchFilters())}
    exact = {q: [p.chunk_id for p in retriever.search(q, tenant=main, k=10, mode="vector")] for q in queries}
    indexes = ["ivf_pq", "ivf_hnsw_sq"] if args.vector_index == "all" else [] if args.vector_index == "none" else [
        args.vector_index]
    result["vector_indexes"] = {}
    for kind in indexes:
        started = time.perf_counter()
        # 96 sub-vectors (4 dimensions each): on 5,000 composed vectors recall@10 vs exact was 0.43 with the
        # default, 0.60 with 48 and 0.81 with 96; the retriever sets no refine factor, so PQ must be fine here.
        config = (IvfPq(distance_type="cosine", num_sub_vectors=96) if kind == "ivf_pq"
                  else IvfHnswSq(distance_type="cosine"))
        tables[main].create_index("vector", config=config, replace=True)
        built = time.perf_counter() - started
        print(f"timing queries ({kind})", file=sys.stderr)
        result["vector_indexes"][kind] = {"build_s": round(built, 1),
                                          "recall@10_vs_exact": ann_recall(retriever, queries, main, exact)}
        result["queries"][f"{kind} vector index"] = measure_queries(retriever, queries, main, args.k, alpha)
    if indexes:
        # the same store without the filter indexes, between two runs with them, so that a machine getting busier
        # during the run does not favour either; a retriever told not to build them searches it meanwhile
        for index in tables[main].list_indices():
            if index.columns[0] in SCALAR_INDEXES:
                tables[main].drop_index(index.name)
        plain = LanceDBRetriever(folder, embedder=embedder, nprobes=args.nprobes, ef=args.ef, filter_indexes=False)
        print(f"timing queries ({indexes[-1]}, without filter indexes)", file=sys.stderr)
        result["queries"][f"{indexes[-1]} vector index, without filter indexes"] = measure_queries(
            plain, queries, main, args.k, alpha)
        ensure_indexes(tables[main])
        print(f"timing queries ({indexes[-1]}, with filter indexes again)", file=sys.stderr)
        result["queries"][f"{indexes[-1]} vector index, with filter indexes again"] = measure_queries(
            retriever, queries, main, args.k, alpha)
    return result


def weaviate_client(url: str) -> Any:
    """A plain client for the benchmark's own collection (created and deleted here, never the app's)."""
    from urllib.parse import urlsplit

    import weaviate

    parts = urlsplit(url)
    secure = parts.scheme == "https"
    return weaviate.connect_to_custom(http_host=parts.hostname, http_port=parts.port or (443 if secure else 80),
                                      http_secure=secure, grpc_host=parts.hostname, grpc_port=50051,
                                      grpc_secure=secure)


def run_weaviate(url: str, args: argparse.Namespace, docs: list[list[Chunk]], corpus: Corpus, queries: list[str],
                 embedder: MemoEmbedder, alpha: float) -> dict[str, Any]:
    from domainroute.retrievers.weaviate_store import WeaviateRetriever

    collection = "DomainrouteScaleBench"
    with weaviate_client(url) as client:
        if client.collections.exists(collection):
            client.collections.delete(collection)
    with WeaviateRetriever(url, embedder=embedder, collection=collection, timeout_s=120.0) as retriever:
        started = time.perf_counter()
        with tqdm(total=corpus.n, desc="write (Weaviate)", unit="chunk") as bar:
            for doc in docs:
                bar.update(retriever.upsert_document(doc, tenant=doc[0].tenant))
        write_s = time.perf_counter() - started
        main = max(corpus.tenants, key=corpus.tenants.__getitem__)
        result = {"write_s": round(write_s, 1), "write_chunks_per_s": round(corpus.n / write_s, 1),
                  "main_tenant": main, "main_tenant_chunks": corpus.tenants[main],
                  "queries": {"HNSW (Weaviate default)": measure_queries(retriever, queries, main, args.k, alpha)}}
    if not args.keep:
        with weaviate_client(url) as client:
            client.collections.delete(collection)
    return result


def render(report: dict[str, Any]) -> str:
    lance = report["lancedb"]
    out = [
        "# Retrieval at scale",
        "",
        f"Command: `{report['command']}` on {report['machine']}, {report['date']}; total wall time "
        f"{report['total_s']} s; 1-minute load average {report['load_average'][0]} at the start and "
        f"{report['load_average'][1]} at the end (other jobs slow every timing). Corpus: {report['n']:,} "
        f"synthetic chunks in {report['documents']:,} document versions, {report['tenants']} tenants (largest "
        f"`{lance['main_tenant']}`: {lance['main_tenant_chunks']:,} chunks), recombined from the knowledge base's "
        "sentences with other insurers, figures and dates. "
        f"Vectors: {report['vectors']}. Queries: {report['queries']} questions from the retrieval evaluation set, "
        f"k = {report['k']}, alpha = {report['alpha']}, on the largest tenant unless said otherwise; query embedding "
        "is excluded from the query timings and reported on its own.",
        "",
        "## Ingestion",
        "",
        "| step | time | throughput |",
        "|---|---|---|",
        f"| generate text | {report['generate_s']} s | |",
        f"| vectors: {report['embed_label']} | {report['embed_s']} s | {report['embed_chunks_per_s']} chunks/s |",
        f"| encoder throughput on {report['embed_sample']} chunks (all-MiniLM-L6-v2, CPU) | "
        f"{report['model_sample_s']} s | {report['model_chunks_per_s']} chunks/s, so {report['n']:,} chunks "
        f"take ~{report['model_full_estimate_min']} min |",
        f"| LanceDB write (`upsert_documents`, {report['batch_docs']} documents per call) | {lance['write_s']} s | "
        f"{lance['write_chunks_per_s']} chunks/s |",
        f"| LanceDB compaction (`optimize`) | {lance['compact_s']} s | |",
        f"| LanceDB full-text index build (all tenants) | {lance['fts_index_s']} s | |",
        f"| LanceDB filter indexes: bitmap on tenant, line, doc_type; B-tree on effective_date, valid_to (all "
        f"tenants) | {lance['scalar_index_s']} s | |",
    ]
    for kind, row in lance["vector_indexes"].items():
        out.append(f"| LanceDB {kind.upper()} vector index build (largest tenant) | {row['build_s']} s | "
                   f"vector recall@10 vs exact: {row['recall@10_vs_exact']} |")
    if "weaviate" in report:
        wv = report["weaviate"]
        out.append(f"| Weaviate write (`upsert_document` per document) | {wv['write_s']} s | "
                   f"{wv['write_chunks_per_s']} chunks/s |")
    out += ["", "## Query latency (query embedding excluded)", "",
            "| store / index | query | p50 ms | p95 ms | mean ms |", "|---|---|---|---|---|"]
    stores = [("LanceDB", lance["queries"])] + ([("Weaviate", report["weaviate"]["queries"])]
                                                if "weaviate" in report else [])
    for store, groups in stores:
        for group, rows in groups.items():
            for query, row in rows.items():
                out.append(f"| {store} {group} | {query} | {row['p50_ms']} | {row['p95_ms']} | {row['mean_ms']} |")
    emb = report["query_embedding"]
    out += ["", f"Embedding one query (all-MiniLM-L6-v2, CPU): p50 {emb['p50_ms']} ms, p95 {emb['p95_ms']} ms over "
            f"{emb['queries']} queries.", ""]
    if "weaviate" not in report:
        out += ["Weaviate: not measured (WEAVIATE_URL was not set).", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="chunks to build (default 100000)")
    parser.add_argument("--tenants", type=int, default=12, help="tenants (default 12)")
    parser.add_argument("--main-share", type=float, default=0.9,
                        help="share of chunks in the largest tenant, where queries are timed (default 0.9)")
    parser.add_argument("--vectors", choices=["model", "composed"], default="model",
                        help="model: embed every chunk (slow on CPU); composed: mean of sentence vectors")
    parser.add_argument("--embed-sample", type=int, default=256, help="chunks used to time the encoder itself")
    parser.add_argument("--batch", type=int, default=BATCH_SIZE, help=f"encoder batch size (default {BATCH_SIZE})")
    parser.add_argument("--batch-docs", type=int, default=500, help="documents per upsert_documents call")
    parser.add_argument("--vector-index", choices=["none", "ivf_pq", "ivf_hnsw_sq", "all"], default="all",
                        help="LanceDB ANN index(es) to build and time after the exact search (default all)")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per row (default 200)")
    parser.add_argument("--k", type=int, default=4, help="passages per query (default 4, the routes' top_k)")
    parser.add_argument("--nprobes", type=int, default=ANN_NPROBES,
                        help=f"IVF partitions searched with a vector index (default {ANN_NPROBES}, the retriever's)")
    parser.add_argument("--ef", type=int, default=ANN_EF,
                        help=f"HNSW candidates with an HNSW index (default {ANN_EF}, the retriever's)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "domainroute-bench",
                        help="where sentence vectors are cached between runs")
    parser.add_argument("--store-dir", type=Path, help="LanceDB folder to build (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the Weaviate collection after the run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "retrieval_scale.md",
                        help="Markdown report (default docs/benchmarks/retrieval_scale.md)")
    args = parser.parse_args(argv)
    if args.n < 100 or args.tenants < 1 or not 0 < args.main_share <= 1 or args.queries < 10:
        parser.error("need --n >= 100, --tenants >= 1, 0 < --main-share <= 1 and --queries >= 10")
    total_started = time.perf_counter()
    load_before = os.getloadavg()[0]
    settings = Settings()

    started = time.perf_counter()
    corpus, sentences = generate(args.n, tenants=args.tenants, main_share=args.main_share, seed=args.seed,
                                 kb=BUNDLED_PACK / "kb")
    generate_s = time.perf_counter() - started

    embedder = MemoEmbedder()
    questions = [item.question for item in load_eval_set(BUNDLED_PACK / "retrieval" / EVAL_NAME)]
    queries = [questions[i % len(questions)] for i in range(args.queries)]
    embedder.encode(questions)  # timed queries below hit this cache: query embedding is excluded
    probe = Embedder()
    single = []
    for question in questions[:50]:
        started = time.perf_counter()
        probe.encode_one(question + " ")  # not cached: the encoder's own time for one query
        single.append((time.perf_counter() - started) * 1000)
    sample = [c for doc in corpus.documents for c in doc][: args.embed_sample]
    started = time.perf_counter()
    probe.encode([embedding_text(c) for c in sample], batch_size=args.batch)
    model_sample_s = time.perf_counter() - started
    rate = len(sample) / model_sample_s
    print(f"encoder: {rate:.1f} chunks/s on this machine now; embedding all {corpus.n:,} chunks with the model "
          f"would take ~{corpus.n / rate / 60:.0f} min" + (" (running it: --vectors model)" if args.vectors == "model"
                                                          else ""), file=sys.stderr)

    if args.vectors == "model":
        vectors, embed_s = embed_model(corpus, probe, args.batch)
        embed_label = "all-MiniLM-L6-v2 on every chunk"
    else:
        vectors, embed_s, cached = embed_composed(corpus, sentences, probe, args.cache_dir)
        embed_label = (f"composed from {len(sentences):,} knowledge-base sentence vectors "
                       f"({'read from the cache' if cached else 'embedded in this run'})")
    docs = with_vectors(corpus, vectors)
    alpha = settings.hybrid_alpha
    report: dict[str, Any] = {
        "command": "python benchmarks/retrieval_scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads, Python {platform.python_version()}",
        "date": date.today().isoformat(), "n": corpus.n, "documents": len(docs), "tenants": len(corpus.tenants),
        "vectors": "all-MiniLM-L6-v2 on every chunk" if args.vectors == "model"
        else "composed (mean of all-MiniLM-L6-v2 sentence vectors)", "embed_label": embed_label,
        "queries": len(queries), "k": args.k, "alpha": alpha, "batch_docs": args.batch_docs,
        "generate_s": round(generate_s, 1), "embed_s": round(embed_s, 1),
        "embed_chunks_per_s": round(corpus.n / embed_s, 1), "embed_sample": len(sample),
        "model_sample_s": round(model_sample_s, 1), "model_chunks_per_s": round(len(sample) / model_sample_s, 1),
        "model_full_estimate_min": round(corpus.n / (len(sample) / model_sample_s) / 60, 1),
        "query_embedding": latency(single),
    }
    if args.store_dir:
        report["lancedb"] = run_lancedb(args, docs, corpus, queries, embedder, alpha, args.store_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="domainroute-scale-") as folder:
            report["lancedb"] = run_lancedb(args, docs, corpus, queries, embedder, alpha, Path(folder))
    url = os.environ.get("WEAVIATE_URL")
    if url:
        report["weaviate"] = run_weaviate(url, args, docs, corpus, queries, embedder, alpha)
    report["total_s"] = round(time.perf_counter() - total_started, 1)
    report["load_average"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(report), encoding="utf-8")
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
