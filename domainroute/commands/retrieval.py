"""``domainroute retrieval eval``: retrieval quality of vector, keyword and hybrid search on the pack's question set.

The hybrid fusion weight (alpha) is chosen on the validation half only; the figures reported for the other half
use that alpha. ``--write-default`` stores it in ``<pack>/retrieval/config.json``, which ``Settings.hybrid_alpha``
reads as its default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from domainroute.embeddings import ENCODER_NAME
from domainroute.errors import ConfigError, InputError

HELP = ("Measure retrieval quality on the pack's labelled questions (retrieval/eval.jsonl): recall@5 and MRR@10 for "
        "vector, keyword and hybrid search side by side. The hybrid alpha is chosen on the validation split (grid "
        "0, 0.1, ..., 1) and the chosen alpha is reported on --split (default test). By default the knowledge base is "
        "ingested into a temporary LanceDB store, so nothing you have stored is read or changed.")
EXAMPLE = ("domainroute retrieval eval                       # test split, temporary LanceDB\n"
           "  domainroute retrieval eval --write-default --report docs/benchmarks/retrieval.md")
DEFAULT_RERANKER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
RERANK_POOL = 20


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("retrieval", cmd_retrieval, HELP, EXAMPLE)
    p.add_argument("action", choices=["eval", "train-encoder"],
                   help="eval: run the evaluation; train-encoder: train the pack's retrieval adapter on "
                        "retrieval/train_questions.jsonl (~20 min on 2 cores), then run eval to measure it")
    p.add_argument("--split", choices=["test", "validation"], default="test",
                   help="split to report at the alpha chosen on validation (default test)")
    p.add_argument("--eval-set", type=Path,
                   help="question set (default: <pack>/retrieval/eval.jsonl)")
    p.add_argument("--store", choices=["temp", "configured"], default="temp",
                   help="temp: ingest the pack's kb/ into a temporary LanceDB (default); configured: search the "
                        "store the settings point at (LanceDB under --data-dir, or Weaviate), already ingested")
    p.add_argument("--write-default", action="store_true",
                   help="write the chosen alpha to <pack>/retrieval/config.json (the default hybrid_alpha)")
    p.add_argument("--report", type=Path, help="also write the results as Markdown to this file")
    p.add_argument("--reranker", default=DEFAULT_RERANKER,
                   help="cross-encoder (Hugging Face id or local folder) to re-rank the hybrid top "
                        f"{RERANK_POOL}; reported as 'not available' unless it loads offline "
                        f"(default {DEFAULT_RERANKER})")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    train = p.add_argument_group("train-encoder (defaults: the committed run)")
    train.add_argument("--epochs", type=int, help="passes over the training questions (default 2)")
    train.add_argument("--lr", dest="learning_rate", type=float, help="peak learning rate (default 2e-4)")
    train.add_argument("--batch-size", dest="batch_size", type=int, help="questions per step (default 16)")
    train.add_argument("--hard-negatives", dest="hard_negatives", type=int,
                       help="mined negatives per question per step (default 1)")
    train.add_argument("--seed", type=int, help="seed of data order, negatives, dropout, LoRA init (default 0)")
    train.add_argument("--out", type=Path, help="adapter folder (default: <pack>/retrieval/encoder)")


def cmd_retrieval(args: argparse.Namespace) -> int:
    from domainroute.cli import _settings
    from domainroute.retrievers.evaluation import EVAL_NAME, load_eval_set

    settings = _settings(args)
    if args.action == "train-encoder":
        return _train_encoder(settings, args)
    eval_path = args.eval_set or settings.pack_dir / "retrieval" / EVAL_NAME
    items = load_eval_set(eval_path)  # a bad set fails before anything loads
    if args.report is not None and args.report.is_dir():
        raise InputError(f"--report must be a file path, not a folder: {args.report}")
    started = time.perf_counter()
    result = evaluate_pack(settings, items, eval_path=eval_path, split=args.split, store=args.store,
                           reranker=args.reranker, write_default=args.write_default)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["command"] = "domainroute " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    markdown = render_markdown(result)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(markdown, encoding="utf-8")
    print(json.dumps(result, indent=2) if args.json else markdown)
    return 0


def _train_encoder(settings: Any, args: argparse.Namespace) -> int:
    from domainroute.retrievers.encoder import EncoderTrainConfig, train_encoder

    chosen = {k: getattr(args, k) for k in ("epochs", "learning_rate", "batch_size", "hard_negatives", "seed")
              if getattr(args, k) is not None}
    try:
        config = EncoderTrainConfig(**chosen)
    except ValueError as exc:
        raise InputError(f"train-encoder: {exc}") from None
    manifest = train_encoder(settings.pack_dir, args.out, config=config, progress=True)
    print(json.dumps(manifest, indent=2))
    print("next: `domainroute retrieval eval` measures it (alpha chosen on validation); `domainroute ingest` "
          "re-embeds a LanceDB store with it (a store refuses queries from another encoder than its own)",
          file=sys.stderr)
    return 0


def evaluate_pack(settings: Any, items: Sequence[Any], *, eval_path: Path, split: str, store: str, reranker: str,
                  write_default: bool) -> dict[str, Any]:
    """Everything the command reports, as a JSON-ready dict."""
    from domainroute.retrievers.evaluation import MemoEmbedder, check_against_chunks
    from domainroute.retrievers.ingest import load_chunks

    chunks = load_chunks(settings.kb_dir)
    check_against_chunks(items, chunks, today=date.today())
    from domainroute.retrievers.encoder import retrieval_embedder

    embedder = MemoEmbedder(retrieval_embedder(settings.pack_dir))
    embedder.encode([item.question for item in items])  # one batch; every search below reuses these vectors
    if store == "temp":
        with tempfile.TemporaryDirectory(prefix="domainroute-eval-") as folder:
            from domainroute.retrievers.ingest import ingest
            from domainroute.retrievers.lancedb_store import LanceDBRetriever

            retriever = LanceDBRetriever(Path(folder), embedder=embedder)
            ingest(settings.kb_dir, retriever, embedder=embedder, progress=True)
            result = _evaluate(retriever, items, chunks, split=split, reranker=reranker)
        if embedder.name != ENCODER_NAME:  # the pack's adapter: the shared encoder alone, side by side
            result["results"].update(_shared_encoder_rows(settings, items, split))
    else:
        from domainroute.retrievers import make_retriever

        retriever = make_retriever(settings.retriever_backend, store_path=settings.store_path,
                                   weaviate_url=settings.weaviate_url,
                                   weaviate_collection=settings.weaviate_collection, embedder=embedder)
        try:
            if retriever.count(tenant=items[0].tenant) == 0:
                raise ConfigError(f"the configured {settings.retriever_backend} store has no chunks for tenant "
                                  f"{items[0].tenant!r}; run `domainroute ingest` first or use --store temp")
            result = _evaluate(retriever, items, chunks, split=split, reranker=reranker)
        finally:
            close = getattr(retriever, "close", None)
            if close is not None:
                close()
    result.update(
        encoder=embedder.name,
        store="temporary LanceDB" if store == "temp" else settings.retriever_backend,
        eval_set=str(eval_path),
        eval_set_sha256=hashlib.sha256(Path(eval_path).read_bytes()).hexdigest(),
        kb_chunks=len(chunks),
        configured_alpha=settings.hybrid_alpha,
        date=date.today().isoformat(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPU threads, Python {platform.python_version()}",
    )
    if write_default:
        from domainroute.retrievers.evaluation import write_default_alpha

        result["wrote_default"] = str(write_default_alpha(settings.pack_dir, result["_choice"], eval_path=eval_path))
    del result["_choice"]
    return result


def _evaluate(retriever: Any, items: Sequence[Any], chunks: Sequence[Any], *, split: str,
              reranker: str) -> dict[str, Any]:
    from tqdm import tqdm

    from domainroute.retrievers.evaluation import (
        choose_alpha,
        item_line,
        per_line,
        run,
        search_ranker,
    )

    by_id = {chunk.chunk_id: chunk for chunk in chunks}
    validation = [item for item in items if item.split == "validation"]
    reported = [item for item in items if item.split == split]
    if not validation or not reported:
        raise InputError(f"the evaluation set needs questions in both 'validation' and {split!r}")
    print(f"choosing alpha on {len(validation)} validation questions ...", file=sys.stderr, flush=True)
    choice = choose_alpha(retriever, validation)
    rows: dict[str, dict[str, Any]] = {}
    runs = [("vector", "vector", 1.0), ("keyword", "keyword", 0.0), ("hybrid, alpha 0.5", "hybrid", 0.5),
            (f"hybrid, alpha {choice.alpha} (chosen)", "hybrid", choice.alpha)]
    chosen_rankings: list[list[str]] = []
    for label, mode, alpha in tqdm(runs, desc=f"{split} split", unit="mode"):
        scores, rankings = run(search_ranker(retriever, mode=mode, alpha=alpha), reported)
        rows[label] = scores.as_dict() | {"mode": mode, "alpha": alpha}
        if alpha == choice.alpha and mode == "hybrid":
            chosen_rankings = rankings
    rows["cross-encoder re-rank of hybrid top 20"] = _rerank_row(retriever, reported, reranker, choice.alpha)
    lines = [item_line(item, by_id) for item in reported]
    return {
        "split": split,
        "questions": {"validation": len(validation), split: len(reported)},
        "chosen_alpha": choice.alpha,
        "alpha_grid_validation": {str(a): s.as_dict() for a, s in choice.grid.items()},
        "results": rows,
        "chosen_by_line": per_line(chosen_rankings, reported, lines),
        "_choice": choice,
    }


def _shared_encoder_rows(settings: Any, items: Sequence[Any], split: str) -> dict[str, dict[str, Any]]:
    """Vector and hybrid search with the shared encoder (no retrieval adapter) in a store of its own, its alpha
    chosen on validation as the adapter's is: what the adapter is compared with in the same run."""
    from domainroute.retrievers.evaluation import MemoEmbedder, choose_alpha, run, search_ranker
    from domainroute.retrievers.ingest import ingest
    from domainroute.retrievers.lancedb_store import LanceDBRetriever

    validation = [item for item in items if item.split == "validation"]
    reported = [item for item in items if item.split == split]
    shared = MemoEmbedder()
    with tempfile.TemporaryDirectory(prefix="domainroute-eval-shared-") as folder:
        retriever = LanceDBRetriever(Path(folder), embedder=shared)
        print("the shared encoder without the adapter, for comparison ...", file=sys.stderr, flush=True)
        ingest(settings.kb_dir, retriever, embedder=shared, progress=True)
        alpha = choose_alpha(retriever, validation).alpha
        rows = {}
        for label, mode, a in (("vector, shared encoder (no retrieval adapter)", "vector", 1.0),
                               (f"hybrid, shared encoder, alpha {alpha} (chosen on validation)", "hybrid", alpha)):
            rows[label] = run(search_ranker(retriever, mode=mode, alpha=a), reported)[0].as_dict() | {
                "mode": mode, "alpha": a, "encoder": shared.name}
    return rows


def _rerank_row(retriever: Any, items: Sequence[Any], name: str, alpha: float) -> dict[str, Any]:
    from domainroute.retrievers.evaluation import load_cross_encoder, rerank_ranker, run

    model, reason = load_cross_encoder(name)
    if model is None:
        return {"mode": "rerank", "available": False, "reason": reason}
    scores, _ = run(rerank_ranker(retriever, model, alpha=alpha, pool=RERANK_POOL), items)
    return scores.as_dict() | {"mode": "rerank", "alpha": alpha, "available": True, "model": name}


def render_markdown(result: dict[str, Any]) -> str:
    split = result["split"]
    out = [
        "# Retrieval quality",
        "",
        f"Command: `{result['command']}` ({result['seconds']} s on {result['machine']}, "
        f"{result['date']}). Encoder: {result['encoder']}. "
        f"Store: {result['store']}; knowledge base: {result['kb_chunks']} chunks; question set "
        f"`{Path(result['eval_set']).name}` (sha256 `{result['eval_set_sha256'][:12]}`), "
        f"{result['questions']['validation']} validation and {result['questions'][split]} {split} questions, "
        "each searched in its tenant on its `as_of` date (today when null), no line filter, k = 10.",
        "",
        "recall@5 = share of a question's relevant chunks in the top 5; MRR@10 = 1 / rank of the first relevant "
        "chunk in the top 10; hit@5 = at least one relevant chunk in the top 5. Averages over questions.",
        "",
        f"## {split.capitalize()} split (alpha chosen on validation: {result['chosen_alpha']})",
        "",
        "| retriever | recall@5 | MRR@10 | hit@5 |",
        "|---|---|---|---|",
    ]
    for label, row in result["results"].items():
        if row.get("available") is False:
            out.append(f"| {label} | not available: {row['reason']} | | |")
        else:
            out.append(f"| {label} | {row['recall@5']:.3f} | {row['mrr@10']:.3f} | {row['hit@5']:.3f} |")
    out += ["", f"Hybrid at the chosen alpha, by line ({split} split):", "",
            "| line | questions | recall@5 | MRR@10 | hit@5 |", "|---|---|---|---|---|"]
    for line, row in result["chosen_by_line"].items():
        out.append(f"| {line} | {row['n']} | {row['recall@5']:.3f} | {row['mrr@10']:.3f} | {row['hit@5']:.3f} |")
    out += ["", "## Alpha grid on the validation split", "", "| alpha | recall@5 | MRR@10 | hit@5 |",
            "|---|---|---|---|"]
    for alpha, row in result["alpha_grid_validation"].items():
        mark = " (chosen)" if float(alpha) == result["chosen_alpha"] else ""
        out.append(f"| {alpha}{mark} | {row['recall@5']:.3f} | {row['mrr@10']:.3f} | {row['hit@5']:.3f} |")
    out.append("")
    return "\n".join(out)
