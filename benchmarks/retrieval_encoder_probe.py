"""Retrieval experiments (session 9, validation split only, not adopted): two other ways to use the encoder.

1. ``maxsim``: a third fusion leg scoring each hybrid candidate (the two legs' top 20) by the best cosine between the
   query and the chunk's single sentences (``sent``) or pairs of adjacent sentences (``pair``); fused as
   ``(1 - w) * hybrid + w * leg`` after min-max normalisation over the candidates.
2. ``static``: a static embedding table distilled from all-MiniLM-L6-v2 (Model2Vec's recipe, written out here:
   every WordPiece token through the encoder alone as ``[CLS] token [SEP]``, mean-pooled, PCA to 256 dimensions,
   weighted by sif / (sif + Zipf probability of its rank)); a text's vector is the mean of its tokens' rows. It costs
   almost nothing to embed, which is what the 10-minute ingestion target needs on 2 cores, and it replaces the
   encoder for both chunks and queries.

Both report recall@5 / MRR@10 on the validation half of ``retrieval/eval.jsonl``; the test half is never read.
Results and context: docs/retrieval.md ("what was tried").

Run: .venv/bin/python benchmarks/retrieval_encoder_probe.py [--only maxsim|static]   (~3 min on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from domainroute.embeddings import Embedder, encoder_path  # noqa: E402
from domainroute.retrievers import make_retriever  # noqa: E402
from domainroute.retrievers.evaluation import EvalItem, choose_alpha, load_eval_set, run, score, search_ranker  # noqa: E402
from domainroute.retrievers.fusion import normalise  # noqa: E402
from domainroute.retrievers.ingest import ingest  # noqa: E402
from retrieval_ltr_probe import PACK, two_legs  # noqa: E402  (benchmarks/, the folder of this script)

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"])|\n+")


def validation_items() -> list[EvalItem]:
    return [i for i in load_eval_set(PACK / "retrieval" / "eval.jsonl") if i.split == "validation"]


def maxsim(items: list[EvalItem]) -> None:
    retriever = make_retriever("lancedb", store_path=Path(tempfile.mkdtemp()))
    ingest(PACK / "kb", retriever, progress=False)
    embedder = retriever._get_embedder()
    cache: dict[tuple[str, str], np.ndarray] = {}
    data = []
    for item in items:
        table, where, query, vector, keyword, ids = two_legs(retriever, embedder, item)
        rows = {r["chunk_id"]: r for r in table.search().where(where).select(["chunk_id", "text", "line"])
                .limit(5000).to_list() if r["chunk_id"] in ids}
        legs = {}
        for mode in ("sent", "pair"):
            best = {}
            for c in ids:
                if (c, mode) not in cache:
                    sents = [x.strip() for x in SENTENCE.split(rows[c]["text"]) if len(x.strip()) > 3]
                    if mode == "pair":
                        sents = [" ".join(sents[i:i + 2]) for i in range(max(1, len(sents) - 1))]
                    cache[(c, mode)] = embedder.encode([f'{rows[c]["line"]}: {x}' for x in sents])
                best[c] = float((cache[(c, mode)] @ query).max())
            legs[mode] = best
        data.append((item, vector, keyword, ids, legs))

    def ranking(d: tuple, alpha: float, w: float, mode: str) -> list[str]:
        _, vector, keyword, ids, legs = d
        vn = dict(zip([c for c, _ in vector], normalise([x for _, x in vector])))
        kn = dict(zip([c for c, _ in keyword], normalise([x for _, x in keyword])))
        mn = dict(zip(ids, normalise([legs[mode][c] for c in ids])))
        fused = {c: (1 - w) * (alpha * vn.get(c, 0.0) + (1 - alpha) * kn.get(c, 0.0)) + w * mn[c] for c in ids}
        return sorted(ids, key=lambda c: -fused[c])[:10]

    base = score([ranking(d, 0.5, 0.0, "sent") for d in data], items)
    print(f"\nmaxsim leg: validation questions {len(items)}; hybrid alpha 0.5 alone: recall@5 {base.recall:.3f} "
          f"MRR@10 {base.mrr:.3f}")
    weights = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
    print("| pieces | alpha | " + " | ".join(f"w {w}" for w in weights) + " |")
    print("|---|---:|" + "---:|" * len(weights))
    for mode in ("sent", "pair"):
        for alpha in (0.3, 0.5, 0.7):
            cells = []
            for w in weights:
                s = score([ranking(d, alpha, w, mode) for d in data], items)
                cells.append(f"{s.recall:.3f} / {s.mrr:.3f}")
            print(f"| {mode} | {alpha} | " + " | ".join(cells) + " |")


class StaticEmbedder:
    """Mean of distilled token rows, L2-normalised (no special tokens at inference, as Model2Vec)."""

    name = "static-minilm-256"

    def __init__(self, dims: int = 256, sif: float = 1e-4):
        from sklearn.decomposition import PCA
        from tokenizers import Tokenizer

        model_dir = encoder_path()
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        vocab = self.tokenizer.get_vocab()
        fast = Embedder()._onnx()
        assert fast is not None, "needs the ONNX encoder (pip install onnx onnxruntime)"
        cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
        n = len(vocab)
        rows = np.zeros((n, 384), dtype=np.float32)
        keep = np.array([not re.fullmatch(r"\[unused\d+\]", t) for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])])
        t0 = time.perf_counter()
        for start in range(0, n, 1024):
            ids = np.arange(start, min(n, start + 1024))
            batch = np.stack([np.full(len(ids), cls_id), ids, np.full(len(ids), sep_id)], axis=1).astype(np.int64)
            hidden = fast.session.run(None, {"input_ids": batch, "attention_mask": np.ones_like(batch)})[0]
            rows[ids] = hidden.mean(axis=1)
        rows[~keep] = 0.0
        reduced = PCA(n_components=dims, random_state=0).fit(rows[keep]).transform(rows).astype(np.float32)
        inv_rank = 1.0 / np.arange(2, n + 2)
        proba = inv_rank / inv_rank.sum()
        self.table = reduced * (sif / (sif + proba))[:, None].astype(np.float32)
        self.table[~keep] = 0.0
        self.dim = dims
        self.distill_seconds = time.perf_counter() - t0

    def encode(self, texts: list[str], **_: object) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, e in enumerate(self.tokenizer.encode_batch(list(texts), add_special_tokens=False)):
            if e.ids:
                out[i] = self.table[e.ids].mean(axis=0)
        return out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def describe(self) -> dict[str, str]:
        return {"encoder": self.name}


def static(items: list[EvalItem]) -> None:
    embedder = StaticEmbedder()
    rng = np.random.default_rng(0)
    words = "coverage deductible claim adjuster premium collision water damage invoice prior authorization".split()
    texts = [" ".join(rng.choice(words, 150)) for _ in range(2000)]  # ~150 words, as a knowledge-base chunk
    t0 = time.perf_counter()
    embedder.encode(texts)
    rate = len(texts) / (time.perf_counter() - t0)
    minilm = Embedder()
    t0 = time.perf_counter()
    minilm.encode(texts[:128])
    minilm_rate = 128 / (time.perf_counter() - t0)
    print(f"\nstatic encoder: distilled in {embedder.distill_seconds:.0f} s; {rate:,.0f} texts/s on 2000 texts of 150 "
          f"words (100,000 chunks in {100_000 / rate:.0f} s) against {minilm_rate:.1f} texts/s for all-MiniLM-L6-v2 "
          f"(ONNX) on 128 of them")
    rows = []
    for name, emb in (("all-MiniLM-L6-v2", None), ("static (distilled from it)", embedder)):
        retriever = make_retriever("lancedb", store_path=Path(tempfile.mkdtemp()), **({"embedder": emb} if emb else {}))
        t0 = time.perf_counter()
        ingest(PACK / "kb", retriever, embedder=emb, progress=False)
        seconds = time.perf_counter() - t0
        vector = run(search_ranker(retriever, mode="vector"), items)[0]
        choice = choose_alpha(retriever, items)
        rows.append((name, seconds, vector, choice))
    print("| encoder | ingest of the knowledge base (s) | vector recall@5 | hybrid 0.5 recall@5 / MRR@10 | "
          "best alpha: recall@5 / MRR@10 |")
    print("|---|---:|---:|---|---|")
    for name, seconds, vector, choice in rows:
        half, best = choice.grid[0.5], choice.grid[choice.alpha]
        print(f"| {name} | {seconds:.1f} | {vector.recall:.3f} | {half.recall:.3f} / {half.mrr:.3f} | "
              f"{choice.alpha}: {best.recall:.3f} / {best.mrr:.3f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["maxsim", "static"], help="run one experiment (default: both)")
    args = parser.parse_args()
    items = validation_items()
    if args.only in (None, "maxsim"):
        maxsim(items)
    if args.only in (None, "static"):
        static(items)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
