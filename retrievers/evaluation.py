"""Retrieval quality on a labelled question set: recall@k and MRR@k per search mode, alpha chosen on validation.

The question set (``<pack>/retrieval/eval.jsonl``) has one JSON object per line::

    {"question": str, "relevant": [chunk ids], "tenant": str, "as_of": "YYYY-MM-DD" | null,
     "split": "validation" | "test"}

``as_of`` null means "today" (the retriever's default date of loss). The split is fixed in the file and must equal
``assign_splits`` (stratified by line of business, ordered by a hash of the question), so it cannot be tuned by
hand. Metrics: recall@k = share of a question's relevant chunks in its top k; MRR@k = 1 / rank of the first relevant
chunk within the top k (0 if none); hit@k = 1 if any relevant chunk is in the top k. Each is averaged over questions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domainroute.embeddings import BATCH_SIZE, Embedder
from domainroute.errors import InputError
from domainroute.retrievers.base import Chunk, Retriever, SearchFilters
from domainroute.retrievers.documents import valid_to_by_version

Split = Literal["validation", "test"]
SPLITS: tuple[Split, ...] = ("validation", "test")
ALPHA_GRID: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))
RECALL_K = 5
MRR_K = 10
CONFIG_NAME = "config.json"
EVAL_NAME = "eval.jsonl"


class EvalItem(BaseModel):
    """One labelled question."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field(min_length=3, max_length=500)
    relevant: tuple[str, ...] = Field(min_length=1)
    tenant: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    as_of: date | None = None
    split: Split


def load_eval_set(path: Path) -> list[EvalItem]:
    """Parse the question set; InputError names the file, line and field of the first problem."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise InputError(f"{path}: evaluation set not found") from exc
    items: list[EvalItem] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            items.append(EvalItem.model_validate(json.loads(raw)))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "line"
            raise InputError(f"{path}:{number}: field {where!r}: {first['msg']}") from exc
    if not items:
        raise InputError(f"{path}: the evaluation set is empty")
    seen: set[str] = set()
    for item in items:
        if item.question in seen:
            raise InputError(f"{path}: question appears twice: {item.question!r}")
        seen.add(item.question)
    return items


def question_hash(question: str) -> str:
    return hashlib.sha256(question.strip().lower().encode("utf-8")).hexdigest()


def assign_splits(questions: Sequence[str], groups: Sequence[str]) -> list[Split]:
    """Half validation, half test within each group (line of business), in order of the question's hash.

    Within a group, questions sorted by ``question_hash`` alternate validation, test, validation, ...
    """
    by_group: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        by_group[group].append(index)
    splits: list[Split] = ["validation"] * len(questions)
    for indices in by_group.values():
        ordered = sorted(indices, key=lambda i: question_hash(questions[i]))
        for position, index in enumerate(ordered):
            splits[index] = SPLITS[position % 2]
    return splits


def item_line(item: EvalItem, chunks_by_id: dict[str, Chunk]) -> str:
    """A question's line of business: the line of its first relevant chunk."""
    return chunks_by_id[item.relevant[0]].line


def check_against_chunks(items: Sequence[EvalItem], chunks: Sequence[Chunk], *, today: date) -> None:
    """Raise InputError unless every relevant id exists, belongs to the item's tenant and is in force on its date.

    Also checks that each item's ``split`` is the one ``assign_splits`` gives, so the split stays fixed.
    """
    by_id = {chunk.chunk_id: chunk for chunk in chunks}
    windows = _validity_windows(chunks)
    for item in items:
        on = item.as_of or today
        for chunk_id in item.relevant:
            chunk = by_id.get(chunk_id)
            if chunk is None:
                raise InputError(f"{item.question!r}: relevant chunk {chunk_id!r} is not in the knowledge base")
            if chunk.tenant != item.tenant:
                raise InputError(f"{item.question!r}: {chunk_id!r} belongs to tenant {chunk.tenant!r}")
            start, end = windows[(chunk.tenant, chunk.doc_id, chunk.version)]
            if not (start <= on and (end is None or on < end)):
                raise InputError(f"{item.question!r}: {chunk_id!r} is not in force on {on.isoformat()}")
    expected = assign_splits([i.question for i in items], [item_line(i, by_id) for i in items])
    for item, split in zip(items, expected, strict=True):
        if item.split != split:
            raise InputError(f"{item.question!r}: split is {item.split!r} but the hash rule gives {split!r}")


def _validity_windows(chunks: Iterable[Chunk]) -> dict[tuple[str, str, int], tuple[date, date | None]]:
    effective: dict[tuple[str, str], dict[int, date]] = defaultdict(dict)
    for chunk in chunks:
        effective[(chunk.tenant, chunk.doc_id)][chunk.version] = chunk.effective_date
    windows: dict[tuple[str, str, int], tuple[date, date | None]] = {}
    for (tenant, doc_id), versions in effective.items():
        for version, valid_to in valid_to_by_version(versions).items():
            windows[(tenant, doc_id, version)] = (versions[version], valid_to)
    return windows


# -- metrics -------------------------------------------------------------------------------------------------------


def recall_at(ranked: Sequence[str], relevant: Sequence[str], k: int) -> float:
    wanted = set(relevant)
    return len(wanted.intersection(ranked[:k])) / len(wanted)


def reciprocal_rank(ranked: Sequence[str], relevant: Sequence[str], k: int) -> float:
    wanted = set(relevant)
    for rank, chunk_id in enumerate(ranked[:k], start=1):
        if chunk_id in wanted:
            return 1.0 / rank
    return 0.0


@dataclass(frozen=True)
class Scores:
    """Averages over ``n`` questions."""

    n: int
    recall: float  # recall@RECALL_K
    mrr: float  # MRR@MRR_K
    hit: float  # hit@RECALL_K

    def as_dict(self) -> dict[str, float | int]:
        return {"n": self.n, f"recall@{RECALL_K}": self.recall, f"mrr@{MRR_K}": self.mrr, f"hit@{RECALL_K}": self.hit}


def score(rankings: Sequence[Sequence[str]], items: Sequence[EvalItem]) -> Scores:
    if not items:
        raise InputError("no questions to score")
    recalls = [recall_at(r, i.relevant, RECALL_K) for r, i in zip(rankings, items, strict=True)]
    mrrs = [reciprocal_rank(r, i.relevant, MRR_K) for r, i in zip(rankings, items, strict=True)]
    hits = [float(x > 0) for x in (recall_at(r, i.relevant, RECALL_K) for r, i in zip(rankings, items, strict=True))]
    return Scores(len(items), float(np.mean(recalls)), float(np.mean(mrrs)), float(np.mean(hits)))


# -- running searches ----------------------------------------------------------------------------------------------

Ranker = Callable[[EvalItem], list[str]]


def search_ranker(retriever: Retriever, *, mode: str, alpha: float = 0.5, k: int = MRR_K) -> Ranker:
    """Chunk ids the retriever returns for one question (its tenant, its as_of, no other filter)."""

    def rank(item: EvalItem) -> list[str]:
        passages = retriever.search(
            item.question, tenant=item.tenant, k=k, filters=SearchFilters(as_of=item.as_of), alpha=alpha, mode=mode
        )
        return [p.chunk_id for p in passages]

    return rank


def run(ranker: Ranker, items: Sequence[EvalItem]) -> tuple[Scores, list[list[str]]]:
    rankings = [ranker(item) for item in items]
    return score(rankings, items), rankings


@dataclass(frozen=True)
class AlphaChoice:
    alpha: float
    grid: dict[float, Scores] = field(default_factory=dict)


def choose_alpha(
    retriever: Retriever, validation: Sequence[EvalItem], *, grid: Sequence[float] = ALPHA_GRID
) -> AlphaChoice:
    """The hybrid alpha with the best validation recall@5; ties go to higher MRR@10, then to the alpha nearest 0.5."""
    if not validation:
        raise InputError("choose_alpha needs validation questions")
    results = {alpha: run(search_ranker(retriever, mode="hybrid", alpha=alpha), validation)[0] for alpha in grid}
    best = max(results, key=lambda a: (round(results[a].recall, 9), round(results[a].mrr, 9), -abs(a - 0.5)))
    return AlphaChoice(alpha=best, grid=results)


# -- the pack's retrieval config -----------------------------------------------------------------------------------


def write_default_alpha(pack_dir: Path, choice: AlphaChoice, *, eval_path: Path) -> Path:
    """Write ``<pack>/retrieval/config.json`` with the chosen alpha and how it was chosen; return the path."""
    chosen = choice.grid[choice.alpha]
    config = {
        "hybrid_alpha": choice.alpha,
        "chosen_on": "validation",
        "criterion": f"max recall@{RECALL_K}, then MRR@{MRR_K}, then nearest 0.5",
        f"validation_recall@{RECALL_K}": round(chosen.recall, 4),
        f"validation_mrr@{MRR_K}": round(chosen.mrr, 4),
        "validation_questions": chosen.n,
        "eval_set_sha256": hashlib.sha256(Path(eval_path).read_bytes()).hexdigest(),
        "command": "domainroute retrieval eval --write-default",
    }
    path = Path(pack_dir) / "retrieval" / CONFIG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


class MemoEmbedder:
    """An encoder (default: the shared one) with a per-text cache, so every mode and alpha reuses one query vector."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner if inner is not None else Embedder()
        self.name, self.dim = self.inner.name, self.inner.dim
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str], *, batch_size: int = BATCH_SIZE, progress: bool = False) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self.inner.encode(missing, batch_size=batch_size, progress=progress)
            self._cache.update(zip(missing, vectors, strict=True))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


def per_line(rankings: Sequence[Sequence[str]], items: Sequence[EvalItem], lines: Sequence[str]) -> dict[str, Any]:
    """Scores broken down by line of business."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, line in enumerate(lines):
        groups[line].append(index)
    return {
        line: score([rankings[i] for i in idx], [items[i] for i in idx]).as_dict()
        for line, idx in sorted(groups.items())
    }


# -- optional cross-encoder re-ranking -----------------------------------------------------------------------------


def load_cross_encoder(name: str) -> tuple[Any | None, str]:
    """(model, "") when the cross-encoder loads without the network, else (None, why not). Never downloads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import CrossEncoder

    try:
        return CrossEncoder(name, device="cpu", local_files_only=True), ""
    except OSError as exc:  # what transformers raises for a model that is neither local nor cached
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"{name!r} does not load offline ({first})"


def rerank_ranker(retriever: Retriever, model: Any, *, alpha: float, pool: int = 20, k: int = MRR_K) -> Ranker:
    """Hybrid top ``pool`` re-ordered by ``model.predict([(question, passage text), ...])`` (higher = better)."""

    def rank(item: EvalItem) -> list[str]:
        passages = retriever.search(
            item.question, tenant=item.tenant, k=pool, filters=SearchFilters(as_of=item.as_of), alpha=alpha
        )
        if not passages:
            return []
        scores = model.predict([(item.question, p.text) for p in passages])
        order = sorted(range(len(passages)), key=lambda i: -float(scores[i]))
        return [passages[i].chunk_id for i in order[:k]]

    return rank
