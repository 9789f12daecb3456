"""Retrieval experiment (session 6, validation split only, not adopted): a learned re-ranker over hybrid candidates.

For each validation question, the candidates are the two legs' top 20 (vector and BM25, as the LanceDB retriever
searches them). Each candidate gets features: fused, vector and BM25 scores and ranks, its document's best fused
score and hit count, the router's probability of the chunk's line, heading similarity, similarity to the first
hit, ordinal and document type. A logistic regression ranks them; recall@5 and MRR@10 are scored by 5-fold
cross-validation over the validation questions (3 fold seeds). The test split is never read. Result and context:
docs/retrieval.md ("what was tried").

Run: .venv/bin/python benchmarks/retrieval_ltr_probe.py     (~75 s on 2 cores: ingest, search, fit)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from domainroute.agents.router import load_router  # noqa: E402
from domainroute.pack import load_pack  # noqa: E402
from domainroute.retrievers import make_retriever  # noqa: E402
from domainroute.retrievers.base import SearchFilters  # noqa: E402
from domainroute.retrievers.evaluation import EvalItem, load_eval_set, score  # noqa: E402
from domainroute.retrievers.filters import resolve_search  # noqa: E402
from domainroute.retrievers.fusion import normalise  # noqa: E402
from domainroute.retrievers.ingest import ingest  # noqa: E402
from domainroute.retrievers.lancedb_store import _where  # noqa: E402

PACK = Path(__file__).resolve().parent.parent / "domainroute" / "packs" / "insurance"
POOL = 20  # candidates per leg, as the retriever fetches them
DOC_TYPES = ("policy_wording", "endorsement", "procedure_manual", "faq", "billing_terms", "notice")
FEATURE_SETS = {"fused only": 2, "scores+ranks": 9, "+document": 12, "+router": 15, "+heading,first hit,ordinal": 18,
                "all (+document type)": 18 + len(DOC_TYPES)}


def two_legs(retriever, embedder, item: EvalItem) -> tuple:
    """What the retriever's hybrid search sees for one question: (table, where, query vector, vector leg, keyword
    leg, the candidates' ids in order); each leg is [(chunk id, raw score)], its top POOL."""
    s = resolve_search(item.question, tenant=item.tenant, k=10, filters=SearchFilters(as_of=item.as_of),
                       alpha=0.5, mode="hybrid")
    table = retriever._open(s.tenant)
    retriever._ensure_indexes(table)
    where = _where(s)
    query = embedder.encode_one(s.query)
    vector = [(c, raw) for c, _, raw in retriever._vector_hits(table, query, where, POOL)]
    keyword = [(c, raw) for c, _, raw in retriever._keyword_hits(table, s.query, where, POOL)]
    ids = list(dict.fromkeys([c for c, _ in vector] + [c for c, _ in keyword]))
    return table, where, query, vector, keyword, ids


def candidates(items: list[EvalItem]) -> list[dict]:
    """Each question's two legs, the candidates' metadata and vectors, and the router's line probabilities."""
    retriever = make_retriever("lancedb", store_path=Path(tempfile.mkdtemp()))
    ingest(PACK / "kb", retriever, progress=False)
    embedder = retriever._get_embedder()
    router = load_router(PACK / "router" / "model", load_pack(PACK))
    router.second = None  # the first stage's probabilities, as when this probe was run (session 6)
    out = []
    for item in items:
        table, where, query, vector, keyword, ids = two_legs(retriever, embedder, item)
        rows = (table.search(query.tolist(), query_type="vector", vector_column_name="vector")
                .distance_type("cosine").where(where, prefilter=True)
                .select(["chunk_id", "vector", "doc_id", "doc_type", "line", "section", "title", "ordinal"])
                .limit(5000).to_list())
        meta = {row["chunk_id"]: row for row in rows if row["chunk_id"] in ids}
        headings = embedder.encode([f'{meta[c]["title"]}. {meta[c]["section"]}' for c in ids])
        proba = router.predict_proba([item.question])[0]
        out.append({"item": item, "query": query, "vector": vector, "keyword": keyword, "ids": ids, "meta": meta,
                    "heading": dict(zip(ids, headings)), "proba": dict(zip(router.routes, map(float, proba)))})
    return out


def features(d: dict, alpha: float = 0.5) -> tuple[list[str], np.ndarray]:
    ids, query = d["ids"], d["query"]
    vn = dict(zip([c for c, _ in d["vector"]], normalise([s for _, s in d["vector"]])))
    kn = dict(zip([c for c, _ in d["keyword"]], normalise([s for _, s in d["keyword"]])))
    vrank = {c: i for i, (c, _) in enumerate(d["vector"])}
    krank = {c: i for i, (c, _) in enumerate(d["keyword"])}
    fused = {c: alpha * vn.get(c, 0.0) + (1 - alpha) * kn.get(c, 0.0) for c in ids}
    order = sorted(ids, key=lambda c: -fused[c])
    frank = {c: i for i, c in enumerate(order)}
    doc_best: dict[str, float] = {}
    doc_hits: dict[str, int] = {}
    for c in ids:
        doc = d["meta"][c]["doc_id"]
        doc_best[doc] = max(doc_best.get(doc, 0.0), fused[c])
        doc_hits[doc] = doc_hits.get(doc, 0) + 1
    first = np.asarray(d["meta"][order[0]]["vector"], dtype=np.float32)
    rows = []
    for c in ids:
        m = d["meta"][c]
        vec = np.asarray(m["vector"], dtype=np.float32)
        line_p = 0.0 if m["line"] == "general" else d["proba"].get(m["line"], 0.0)
        rows.append([fused[c], 1 / (1 + frank[c]),  # fused only
                     vn.get(c, 0.0), kn.get(c, 0.0), float(vec @ query), float(c in krank), float(c in vrank),
                     1 / (1 + vrank.get(c, 2 * POOL)), 1 / (1 + krank.get(c, 2 * POOL)),  # scores + ranks
                     doc_best[m["doc_id"]], fused[c] / max(doc_best[m["doc_id"]], 1e-6), doc_hits[m["doc_id"]] / 10,
                     line_p, float(m["line"] == "general"), d["proba"].get("out_of_scope", 0.0),  # router
                     float(d["heading"][c] @ query), float(vec @ first), min(m["ordinal"], 10) / 10,
                     *(float(m["doc_type"] == t) for t in DOC_TYPES)])
    return ids, np.array(rows)


def cross_validated(prepared: list, columns: int, c: float, seed: int, folds: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(prepared))
    rankings: list[list[str]] = [[] for _ in prepared]
    for fold in range(folds):
        held = set(order[fold::folds].tolist())
        train = [p for i, p in enumerate(prepared) if i not in held]
        x = np.vstack([p[1][:, :columns] for p in train])
        y = np.concatenate([p[2] for p in train])
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(x), y)
        for i in held:
            ids, feats, _, _ = prepared[i]
            s = model.decision_function(scaler.transform(feats[:, :columns]))
            rankings[i] = [ids[j] for j in np.argsort(-s)[:10]]
    return score(rankings, [p[3] for p in prepared]).as_dict()


def main() -> int:
    items = [i for i in load_eval_set(PACK / "retrieval" / "eval.jsonl") if i.split == "validation"]
    prepared = []
    for d in candidates(items):
        ids, feats = features(d)
        prepared.append((ids, feats, np.array([c in d["item"].relevant for c in ids], dtype=float), d["item"]))
    base = score([sorted(p[0], key=lambda c, f=dict(zip(p[0], p[1][:, 0])): -f[c])[:10] for p in prepared],
                 [p[3] for p in prepared]).as_dict()
    print(f"validation questions: {len(items)}; hybrid alpha 0.5: recall@5 {base['recall@5']:.3f} "
          f"MRR@10 {base['mrr@10']:.3f}")
    print("| features | C | recall@5 (mean over 3 fold seeds) | range | MRR@10 |")
    print("|---|---:|---:|---|---:|")
    for name, columns in FEATURE_SETS.items():
        for c in (0.01, 0.1, 1.0):
            runs = [cross_validated(prepared, columns, c, seed) for seed in range(3)]
            recall = [r["recall@5"] for r in runs]
            print(f"| {name} | {c} | {np.mean(recall):.3f} | {min(recall):.3f}-{max(recall):.3f} | "
                  f"{np.mean([r['mrr@10'] for r in runs]):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
