"""The learned router: sentence embedding + learned TF-IDF features -> multinomial logistic regression ->
temperature-calibrated route.

What it decides, in order:

1. Calibrated probabilities over every pack route (``out_of_scope`` is a route with its own examples).
2. Abstain: if the top route is a domain route whose probability is under ``max(abstain_threshold,
   route.min_confidence)``, the answer is ``out_of_scope``. ``abstain_threshold`` is chosen on the validation
   split: best accuracy subject to out-of-scope recall >= ``oos_recall_target``.
3. Follow-ups: with ``previous_route`` set and a short query (<= ``FOLLOW_UP_MAX_WORDS`` words), the previous
   route is kept unless the query alone is confidently elsewhere (top probability >= ``follow_up_threshold``,
   chosen on validation, see ``FOLLOW_UP_SWITCH_SHARE``).
4. Second stage (optional, on by default in ``train_router``): a query whose first-stage top probability is under
   ``cascade_threshold`` is decided again by a second router of the same kind on all-mpnet-base-v2 + MiniLM
   embeddings, which is more accurate and ~7x slower per query (about 33 against 5 ms on 2 cores); the threshold
   is chosen on validation (best accuracy, then the fewest second-stage calls), so most queries cost only the
   first stage.

The model is ``classifier.safetensors`` (coefficients, intercepts, idf weights), ``lexicon.json`` (the TF-IDF
terms) and ``manifest.json`` (routes, thresholds, temperature, data hashes, test metrics, and the sha256 of the two
other files): no pickle. A second stage lives in ``second_stage-v<N>/`` (N: the manifest's version) with the same
three files, pinned by their hashes in the first stage's manifest (``cascade``). The manifest is written last, so a
save that stops half-way is an error at load (files that do not match it), never a silent mix. Train with
:func:`train_router` (``domainroute router train``), load with :func:`load_router`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from domainroute.agents import splits as splits_mod
from domainroute.errors import ConfigError
from domainroute.hashing import files_not_matching, sha256_file
from domainroute.pack import OUT_OF_SCOPE, Pack, load_pack
from domainroute.schemas import RouteDecision, validate_query

FORMAT = 1
FOLLOW_UP_MAX_WORDS = 8
"""A query this short, in a thread that already has a route, is treated as a possible follow-up."""
FOLLOW_UP_SWITCH_SHARE = 0.5
"""The follow-up threshold is the confidence that this share of short, correctly routed validation queries reach:
a short message leaves the thread's route only when it is as sure as the median short self-contained question.
Short elliptic follow-ups ("and what about the deductible?") name a topic several routes share, and a classifier
trained on self-contained questions is often fairly, but not very, sure about them."""
FOLLOW_UP_BOUNDS = (0.6, 0.995)
PERSISTENCE_PRIOR = 0.7
"""Prior that a follow-up stays on the thread's route; gives the confidence reported for a kept route."""
CLASSIFIER_FILE = "classifier.safetensors"
LEXICON_FILE = "lexicon.json"
MANIFEST_FILE = "manifest.json"
SECOND_STAGE_DIR = "second_stage"


class TextEncoder(Protocol):
    """What the router needs from an encoder: normalised vectors, one row per text."""

    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------------------------------
# small numeric helpers, shared with escalation.py


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: bin-weighted gap between stated confidence and observed accuracy."""
    p, y = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    if p.size == 0:
        return float("nan")
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    gaps = [(idx == b).mean() * abs(p[idx == b].mean() - y[idx == b].mean()) for b in range(bins) if (idx == b).any()]
    return float(sum(gaps))


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=float) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def sha256_files(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0" + Path(p).read_bytes() + b"\0")
    return h.hexdigest()


def next_version(model_dir: Path) -> tuple[int, dict[str, Any] | None]:
    """The version a model saved into ``model_dir`` gets, and the manifest it replaces (if any)."""
    path = Path(model_dir) / MANIFEST_FILE
    if not path.exists():
        return 1, None
    old = json.loads(path.read_text(encoding="utf-8"))
    return int(old.get("version", 0)) + 1, old


def latency_context() -> dict[str, Any]:
    """What the p50/p95 in a manifest were measured under (the machine load matters as much as the model)."""
    import os

    import torch

    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2)}


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood of ``softmax(logits / T)``."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        p = softmax(logits / np.exp(log_t))
        return float(-np.mean(np.log(p[np.arange(len(labels)), labels] + 1e-12)))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def fit_logreg(x, y: np.ndarray, *, c: float, class_weight: str | None = None, solver: str = "lbfgs"):
    """L2 logistic regression (multinomial for several classes with lbfgs; liblinear is faster for one binary head)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=2000, class_weight=class_weight, solver=solver).fit(x, y)


class LexicalFeatures:
    """Learned TF-IDF features (word 1-2-grams, character 2-5-grams) that sit beside the sentence embedding.

    The vocabulary and weights are fitted on training text, never written by hand; they let a linear model pick
    up misspellings and domain jargon ("windsheild", "EUO", "SR-22") that a small encoder blurs. Saved as a term
    list (JSON) and an idf array (safetensors), no pickle. Each analyzer's block is L2-normalised, as sklearn's
    ``TfidfVectorizer(sublinear_tf=True)`` does.
    """

    ANALYZERS: tuple[tuple[str, tuple[int, int]], ...] = (("word", (1, 2)), ("char_wb", (2, 5)))

    def __init__(self, vocab: dict[str, list[str]], idf: dict[str, np.ndarray]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        names = [a for a, _ in self.ANALYZERS]
        if sorted(vocab) != sorted(names) or sorted(idf) != sorted(names):
            raise ConfigError(f"lexical features need analyzers {names}, got {sorted(vocab)}")
        for a in names:
            if len(vocab[a]) != len(idf[a]):
                raise ConfigError(f"lexical analyzer {a!r}: {len(vocab[a])} terms but {len(idf[a])} idf weights")
        self.vocab = {a: list(vocab[a]) for a in names}
        self.idf = {a: np.asarray(idf[a], dtype=np.float32) for a in names}
        self._index = {a: {t: i for i, t in enumerate(self.vocab[a])} for a in names}
        self._analyze = {a: TfidfVectorizer(analyzer=a, ngram_range=r).build_analyzer() for a, r in self.ANALYZERS}

    @classmethod
    def fit(cls, texts: list[str]) -> "LexicalFeatures":
        from sklearn.feature_extraction.text import TfidfVectorizer

        vocab, idf = {}, {}
        for a, r in cls.ANALYZERS:
            v = TfidfVectorizer(analyzer=a, ngram_range=r, sublinear_tf=True).fit(texts)
            vocab[a] = sorted(v.vocabulary_, key=v.vocabulary_.__getitem__)
            idf[a] = v.idf_.astype(np.float32)
        return cls(vocab, idf)

    @property
    def dim(self) -> int:
        return sum(len(t) for t in self.vocab.values())

    def rows(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text: the non-zero column indices (within the lexical block) and their values."""
        out = []
        for text in texts:
            cols: list[np.ndarray] = []
            vals: list[np.ndarray] = []
            offset = 0
            for a, _ in self.ANALYZERS:
                index, idf = self._index[a], self.idf[a]
                counts: dict[int, int] = {}
                for term in self._analyze[a](text):
                    j = index.get(term)
                    if j is not None:
                        counts[j] = counts.get(j, 0) + 1
                if counts:
                    j_arr = np.fromiter(counts, dtype=np.int64, count=len(counts))
                    v = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * idf[j_arr]
                    cols.append(j_arr + offset)
                    vals.append(v / np.sqrt((v ** 2).sum()))
                offset += len(index)
            out.append((np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64),
                        np.concatenate(vals).astype(np.float32) if vals else np.zeros(0, dtype=np.float32)))
        return out

    def transform(self, texts: list[str]):
        """The lexical block as a sparse matrix (training)."""
        from scipy.sparse import csr_matrix

        rows = self.rows(texts)
        ptr = np.cumsum([0] + [len(c) for c, _ in rows])
        cols = np.concatenate([c for c, _ in rows]) if rows else np.zeros(0, dtype=np.int64)
        vals = np.concatenate([v for _, v in rows]) if rows else np.zeros(0, dtype=np.float32)
        return csr_matrix((vals, cols, ptr), shape=(len(texts), self.dim), dtype=np.float32)

    def design(self, dense: np.ndarray, texts: list[str]):
        """``[dense | lexical]`` as one sparse matrix for training the linear model."""
        from scipy.sparse import csr_matrix, hstack

        return hstack([csr_matrix(dense.astype(np.float32)), self.transform(texts)], format="csr")

    def scores(self, dense: np.ndarray, texts: list[str], coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        """``design(dense, texts) @ coef.T + intercept`` without building sparse matrices (the fast path)."""
        d = dense.shape[1]
        z = dense @ coef[:, :d].T + intercept
        for i, (cols, vals) in enumerate(self.rows(texts)):
            if cols.size:
                z[i] += coef[:, d + cols] @ vals
        return z

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"idf_{a}": self.idf[a] for a, _ in self.ANALYZERS}

    @classmethod
    def from_saved(cls, vocab: dict[str, list[str]], arrays: dict[str, np.ndarray]) -> "LexicalFeatures":
        return cls(vocab, {a: arrays[f"idf_{a}"] for a, _ in cls.ANALYZERS})


def linear_scores(design, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """``design @ coef.T + intercept`` for a dense array or a sparse matrix."""
    return np.asarray(design @ coef.T) + intercept


# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouterThresholds:
    abstain: float
    follow_up: float
    min_confidence: dict[str, float]


class EmbeddingRouter:
    """Implements :class:`domainroute.agents.interfaces.Router` on sentence embeddings (plus learned lexical
    features, ``lexical=True``).

    ``embedder``: anything with ``.encode(list[str]) -> np.ndarray`` of normalised rows and a ``name`` (default:
    the shared all-MiniLM-L6-v2 :func:`domainroute.embeddings.default_embedder`, loaded on first use).
    """

    def __init__(self, embedder: TextEncoder | None = None, *, lexical: bool = True, oos_recall_target: float = 0.95,
                 c_grid: Sequence[float] = (4.0, 8.0, 16.0, 32.0, 64.0)):
        if not 0.0 < oos_recall_target <= 1.0:
            raise ValueError(f"oos_recall_target must be in (0, 1], got {oos_recall_target}")
        if not c_grid or any(c <= 0 for c in c_grid):
            raise ValueError(f"c_grid must be positive regularisation strengths, got {tuple(c_grid)}")
        self._embedder = embedder
        self.lexical = lexical
        self.oos_recall_target = oos_recall_target
        self.c_grid = tuple(c_grid)
        self.routes: list[str] = []
        self.features: LexicalFeatures | None = None
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self.temperature = 1.0
        self.thresholds: RouterThresholds | None = None
        self.fit_report: dict[str, Any] = {}
        self.manifest: dict[str, Any] = {}
        self.second: EmbeddingRouter | None = None
        self.cascade_threshold = 0.0
        self.cascade_report: dict[str, Any] = {}

    # -- plumbing -------------------------------------------------------------------------------------------
    @property
    def embedder(self) -> TextEncoder:
        if self._embedder is None:
            from domainroute.embeddings import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    @property
    def encoder_name(self) -> str:
        return str(getattr(self.embedder, "name", type(self.embedder).__name__))

    @property
    def fitted(self) -> bool:
        return self.coef is not None and self.thresholds is not None

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ConfigError("the router has no model yet: call fit(...) or load it (run `domainroute router train`)")

    def _design(self, texts: list[str]):
        emb = np.asarray(self.embedder.encode(texts), dtype=np.float32)
        return emb if self.features is None else self.features.design(emb, texts)

    def _proba(self, design) -> np.ndarray:
        assert self.coef is not None and self.intercept is not None
        return softmax(linear_scores(design, self.coef, self.intercept) / self.temperature)

    def _proba_fast(self, texts: list[str]) -> np.ndarray:
        """Same as ``_proba(_design(texts))``, without building sparse matrices (inference path)."""
        assert self.coef is not None and self.intercept is not None
        emb = np.asarray(self.embedder.encode(texts), dtype=np.float32)
        if self.features is None:
            z = emb @ self.coef.T + self.intercept
        else:
            z = self.features.scores(emb, texts, self.coef, self.intercept)
        return softmax(z / self.temperature)

    def predict_proba(self, queries: list[str]) -> np.ndarray:
        """Calibrated probabilities, one column per entry of ``self.routes`` (the second stage's where it decides)."""
        self._require_fitted()
        return self._cascade_proba([validate_query(q) for q in queries])[0]

    def _cascade_proba(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities of the stage that decides each text, and a mask of the texts the second stage decides."""
        p = self._proba_fast(texts)
        second = self._needs_second(p)
        if second.any():
            assert self.second is not None
            p = p.copy()
            p[second] = self.second._proba_fast([t for t, s in zip(texts, second) if s])
        return p, second

    def _needs_second(self, p: np.ndarray) -> np.ndarray:
        if self.second is None:
            return np.zeros(len(p), dtype=bool)
        return p.max(axis=1).astype(np.float64) < self.cascade_threshold  # as the threshold was chosen

    # -- training -------------------------------------------------------------------------------------------
    def fit(self, examples: list[dict[str, str]], routes: list[str], validation: list[dict[str, str]] | None = None,
            *, min_confidence: dict[str, float] | None = None) -> "EmbeddingRouter":
        """Train on ``[{"query", "route"}]``; choose thresholds on ``validation`` (default: 20 % of examples).

        ``routes`` must include ``out_of_scope``; ``min_confidence`` is the pack's per-route floor.
        """
        routes = list(routes)
        if OUT_OF_SCOPE not in routes:
            raise ValueError(f"routes must include {OUT_OF_SCOPE!r} (the refusal route), got {routes}")
        if len(set(routes)) != len(routes):
            raise ValueError(f"route names must be unique, got {routes}")
        if validation is None:
            parts = splits_mod.assign_splits(examples, splits_mod.route_label, ratios=(0.8, 0.2, 0.0))
            examples, validation = parts["train"], parts["validation"]
        for name, rows in (("examples", examples), ("validation", validation)):
            unknown = sorted({r["route"] for r in rows} - set(routes))
            if unknown:
                raise ValueError(f"{name} use routes {unknown} that are not in routes {routes}; add them to pack.toml")
        thin = [r for r in routes if sum(1 for e in examples if e["route"] == r) < 2]
        if thin:
            raise ValueError(f"routes {thin} have fewer than 2 training examples; add examples to queries.jsonl")
        if not validation:
            raise ValueError("validation is empty; the abstain threshold is chosen on it")

        index = {r: i for i, r in enumerate(routes)}
        q_tr = [validate_query(e["query"]) for e in examples]
        q_va = [validate_query(e["query"]) for e in validation]
        y_tr = np.array([index[e["route"]] for e in examples])
        y_va = np.array([index[e["route"]] for e in validation])
        self.routes, self.features = routes, (LexicalFeatures.fit(q_tr) if self.lexical else None)
        x_tr, x_va = self._design(q_tr), self._design(q_va)

        # per C: fit, one temperature on the validation logits (monotone, so the thresholds chosen on the same split
        # afterwards see the same order), the abstain threshold; keep the C with the best validation accuracy after
        # abstaining (what the router is judged on), ties to the lower validation log-loss
        floors = {r: float((min_confidence or {}).get(r, 0.0)) for r in routes}
        best = None
        for c in self.c_grid:
            clf = fit_logreg(x_tr, y_tr, c=c)
            p = clf.predict_proba(x_va)
            loss = float(-np.mean(np.log(p[np.arange(len(y_va)), y_va] + 1e-12)))
            self.coef, self.intercept = clf.coef_.astype(np.float32), clf.intercept_.astype(np.float32)
            self.temperature = fit_temperature(linear_scores(x_va, self.coef, self.intercept), y_va)
            p_va = self._proba(x_va)
            abstain, abstain_report = self._choose_abstain(p_va, y_va, floors)
            key = (bool(abstain_report["oos_recall_target_met"]), abstain_report["validation_accuracy"], -loss)
            if best is None or key > best[0]:
                best = (key, c, self.coef, self.intercept, self.temperature, p_va, abstain, abstain_report)
        assert best is not None
        _, c, self.coef, self.intercept, self.temperature, p_va, abstain, abstain_report = best
        follow_up, follow_report = self._choose_follow_up_threshold(q_va, p_va, y_va)
        self.thresholds = RouterThresholds(abstain=abstain, follow_up=follow_up, min_confidence=floors)
        top = p_va.argmax(axis=1)
        raw = softmax(linear_scores(x_va, self.coef, self.intercept))
        self.fit_report = {
            "n_train": len(examples), "n_validation": len(validation), "C": c,
            "lexical_features": self.features.dim if self.features else 0,
            "temperature": round(self.temperature, 4),
            "validation_top1_accuracy": round(float((top == y_va).mean()), 4),
            "validation_ece": round(ece(p_va.max(axis=1), top == y_va), 4),
            "validation_ece_uncalibrated": round(ece(raw.max(axis=1), raw.argmax(axis=1) == y_va), 4),
            **abstain_report, **follow_report,
        }
        return self

    def add_second_stage(self, second: "EmbeddingRouter", examples: list[dict[str, str]],
                         validation: list[dict[str, str]]) -> "EmbeddingRouter":
        """Fit ``second`` (unfitted, e.g. on a larger encoder) on the same data, and choose the cascade threshold on
        ``validation`` (:meth:`_choose_cascade_threshold`). The second stage decides a query when this router's top
        probability is under the threshold."""
        self._require_fitted()
        assert self.thresholds is not None
        if second.fitted or second.second is not None:
            raise ValueError("add_second_stage takes an unfitted router")
        second.fit(examples, self.routes, validation, min_confidence=self.thresholds.min_confidence)
        self.second = second
        self.cascade_threshold, self.cascade_report = self._choose_cascade_threshold(validation)
        return self

    def _choose_cascade_threshold(self, validation: list[dict[str, str]]) -> tuple[float, dict[str, Any]]:
        """Best validation accuracy with out-of-scope recall >= the target, then the fewest second-stage calls."""
        assert self.second is not None and self.thresholds is not None and self.second.thresholds is not None
        q_va = [validate_query(e["query"]) for e in validation]
        y = np.array([self.routes.index(e["route"]) for e in validation])
        p1, p2 = self._proba_fast(q_va), self.second._proba_fast(q_va)
        d1 = self._decide_many(p1, self.thresholds.abstain, self.thresholds.min_confidence)
        d2 = self.second._decide_many(p2, self.second.thresholds.abstain, self.second.thresholds.min_confidence)
        oos = self.routes.index(OUT_OF_SCOPE)
        conf = p1.max(axis=1).astype(np.float64)  # compared in float64 here and at inference (_needs_second)
        # the second stage decides where conf < t: t = 0 is the first stage alone, t above every conf the second alone
        cands = np.unique(np.concatenate([[0.0], conf, [1.0 + 1e-6]]))

        def score(t: float) -> tuple[float, float, float]:
            use = conf < t
            d = np.where(use, d2, d1)
            rec = float((d[y == oos] == oos).mean()) if (y == oos).any() else 1.0
            return float((d == y).mean()), rec, float(use.mean())

        rows = {float(t): score(float(t)) for t in cands}
        ok = {t: r for t, r in rows.items() if r[1] >= self.oos_recall_target} or \
            {t: r for t, r in rows.items() if r[1] == max(x[1] for x in rows.values())}
        best = max(r[0] for r in ok.values())
        lowest = min(t for t, r in ok.items() if r[0] == best)  # fewest second-stage calls at the best accuracy
        below = [float(t) for t in cands if t < lowest]
        t = (lowest + below[-1]) / 2 if below else lowest  # any t in (below, lowest] sends the same queries
        acc, rec, share = score(t)
        return float(t), {
            "validation_accuracy": round(acc, 4), "validation_oos_recall": round(rec, 4),
            "validation_second_stage_share": round(share, 4),
            "validation_accuracy_first_stage_only": round(rows[0.0][0], 4),
            "validation_accuracy_second_stage_only": round(rows[float(cands[-1])][0], 4),
        }

    def _decide_many(self, p: np.ndarray, abstain: float, floors: dict[str, float]) -> np.ndarray:
        oos = self.routes.index(OUT_OF_SCOPE)
        top = p.argmax(axis=1)
        bars = np.array([max(abstain, floors.get(r, 0.0)) for r in self.routes])
        out = top.copy()
        out[(top != oos) & (p.max(axis=1) < bars[top])] = oos
        return out

    def _choose_abstain(self, p: np.ndarray, y: np.ndarray, floors: dict[str, float]) -> tuple[float, dict[str, Any]]:
        """Best validation accuracy subject to out-of-scope recall >= target; middle of the best plateau."""
        oos = self.routes.index(OUT_OF_SCOPE)
        cands = np.unique(np.concatenate([[0.0], p.max(axis=1), [1.0]]))

        def score(t: float) -> tuple[float, float]:
            pred = self._decide_many(p, t, floors)
            rec = float((pred[y == oos] == oos).mean()) if (y == oos).any() else 1.0
            return float((pred == y).mean()), rec

        rows = [(float(t), *score(float(t))) for t in cands]
        ok = [r for r in rows if r[2] >= self.oos_recall_target]
        met = bool(ok)
        if not ok:  # the target is out of reach: best out-of-scope recall first, then accuracy
            ok = [r for r in rows if r[2] == max(r[2] for r in rows)]
        best_acc = max(r[1] for r in ok)
        plateau = sorted(r[0] for r in ok if r[1] == best_acc)
        # a candidate t abstains below it; any t up to the next candidate decides the same: take the midpoint
        lo = plateau[0]
        above = [t for t in cands if t > plateau[-1]]
        t = (lo + float(above[0])) / 2 if above else lo
        acc, rec = score(t)
        return float(t), {"abstain_threshold": round(float(t), 4), "validation_accuracy": round(acc, 4),
                          "validation_oos_recall": round(rec, 4), "oos_recall_target_met": met}

    def _choose_follow_up_threshold(self, queries: list[str], p: np.ndarray,
                                    y: np.ndarray) -> tuple[float, dict[str, Any]]:
        """The confidence reached by FOLLOW_UP_SWITCH_SHARE of short, correctly routed validation queries; the
        report says which share of them would leave a different previous route (they are self-contained)."""
        short = np.array([self.is_follow_up(q) for q in queries])
        conf = np.sort(p.max(axis=1)[short & (p.argmax(axis=1) == y)])
        if conf.size == 0:
            t = FOLLOW_UP_BOUNDS[1]
        else:  # the largest t with share(conf >= t) >= target
            t = float(conf[int(np.floor((1 - FOLLOW_UP_SWITCH_SHARE) * conf.size))])
        t = float(np.clip(t, *FOLLOW_UP_BOUNDS))
        return t, {"follow_up_threshold": round(t, 4), "follow_up_short_validation_queries": int(short.sum()),
                   "follow_up_switch_rate": round(float((conf >= t).mean()), 4) if conf.size else None}

    # -- inference ------------------------------------------------------------------------------------------
    @staticmethod
    def is_follow_up(query: str) -> bool:
        """Short enough to lean on the thread's previous route (``FOLLOW_UP_MAX_WORDS``)."""
        return len(query.split()) <= FOLLOW_UP_MAX_WORDS

    def route(self, query: str, *, previous_route: str | None = None) -> RouteDecision:
        """The route for ``query``; ``out_of_scope`` when no route is confident enough."""
        self._require_fitted()
        text = validate_query(query)
        if previous_route is not None and previous_route not in self.routes:
            raise ValueError(f"unknown previous_route {previous_route!r}; known: {', '.join(self.routes)}")
        return self._route_text(text, previous_route)[1]

    def _route_text(self, text: str, previous_route: str | None) -> tuple[np.ndarray, RouteDecision, bool]:
        """The deciding stage's probabilities, its decision, and whether the second stage decided."""
        p = self._proba_fast([text])[0]
        by_second = bool(self._needs_second(p[None, :])[0])
        if by_second:
            p = self._stage(True)._proba_fast([text])[0]
        return p, self._stage(by_second)._decide(p, text, previous_route), by_second

    def _stage(self, second: bool) -> "EmbeddingRouter":
        if second:
            assert self.second is not None
            return self.second
        return self

    def _decide(self, p: np.ndarray, text: str, previous_route: str | None) -> RouteDecision:
        assert self.thresholds is not None
        top = int(p.argmax())
        name, conf = self.routes[top], float(p[top])
        if previous_route is not None and previous_route != OUT_OF_SCOPE and self.is_follow_up(text):
            if name == previous_route or conf < self.thresholds.follow_up:
                # not confidently elsewhere: stay, with the route's probability under a persistence prior
                k = self.routes.index(previous_route)
                others = (1 - PERSISTENCE_PRIOR) / max(1, len(self.routes) - 1)
                stay = PERSISTENCE_PRIOR * float(p[k])
                kept = stay / (stay + others * (1 - float(p[k])))
                return RouteDecision(route=previous_route, confidence=min(1.0, kept))
        if name != OUT_OF_SCOPE:
            bar = max(self.thresholds.abstain, self.thresholds.min_confidence.get(name, 0.0))
            if conf < bar:
                return RouteDecision(route=OUT_OF_SCOPE, confidence=float(1.0 - conf))
        return RouteDecision(route=name, confidence=min(1.0, max(0.0, conf)))

    # -- evaluation -----------------------------------------------------------------------------------------
    def evaluate(self, examples: list[dict[str, str]], *, timed: bool = True) -> dict[str, Any]:
        """Accuracy, macro-F1, per-route precision/recall, out-of-scope precision/recall, ECE and latency.

        ``timed``: every example goes through the :meth:`route` path one at a time, so p50/p95 are the real
        per-query cost; otherwise one batch (same decisions, no latency). ECE is measured on the calibrated top-1
        probability before abstaining.
        """
        self._require_fitted()
        if not examples:
            raise ValueError("evaluate needs at least one example")
        from sklearn.metrics import f1_score, precision_recall_fscore_support

        texts = [validate_query(e["query"]) for e in examples]
        truth = [e["route"] for e in examples]
        times: list[float] = []
        if timed:
            probs, preds, seconds = [], [], []
            for text in texts:  # what route() does, keeping the probabilities for the calibration error
                t0 = time.perf_counter()
                p_one, decision, by_second = self._route_text(text, None)
                times.append(time.perf_counter() - t0)
                probs.append(p_one)
                preds.append(decision.route)
                seconds.append(by_second)
            p, second = np.stack(probs), np.array(seconds, dtype=bool)
        else:
            p, second = self._cascade_proba(texts)
            preds = [self._stage(bool(s))._decide(p_one, text, None).route for p_one, text, s in zip(p, texts, second)]
        top_right = np.array([self.routes[i] for i in p.argmax(axis=1)]) == np.array(truth)
        labels = list(self.routes)
        prec, rec, f1, sup = precision_recall_fscore_support(truth, preds, labels=labels, zero_division=0)
        per_route = {r: {"precision": round(float(prec[i]), 4), "recall": round(float(rec[i]), 4),
                         "f1": round(float(f1[i]), 4), "support": int(sup[i])} for i, r in enumerate(labels)}
        present = [r for r in labels if r in set(truth)]
        return {
            "n": len(examples),
            "accuracy": round(float(np.mean(np.array(preds) == np.array(truth))), 4),
            "macro_f1": round(float(f1_score(truth, preds, labels=present, average="macro", zero_division=0)), 4),
            "top1_accuracy_before_abstain": round(float(top_right.mean()), 4),
            "per_route": per_route,
            "out_of_scope_precision": per_route[OUT_OF_SCOPE]["precision"],
            "out_of_scope_recall": per_route[OUT_OF_SCOPE]["recall"],
            "ece": round(ece(p.max(axis=1), top_right), 4),
            **({"second_stage_share": round(float(second.mean()), 4)} if self.second is not None else {}),
            **(percentiles_ms(times) if timed else {}),
        }

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, model_dir: Path, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``classifier.safetensors``, ``lexicon.json`` and ``manifest.json``; returns the manifest."""
        self._require_fitted()
        assert self.thresholds is not None and self.coef is not None and self.intercept is not None
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        version, old = next_version(model_dir)
        manifest = {
            "kind": "domainroute.router", "format": FORMAT, "version": version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "encoder": self.encoder_name, "lexical": self.features is not None, "routes": self.routes,
            "temperature": self.temperature,
            "thresholds": {"abstain": self.thresholds.abstain, "follow_up": self.thresholds.follow_up,
                           "follow_up_max_words": FOLLOW_UP_MAX_WORDS,
                           "min_confidence": self.thresholds.min_confidence},
            "fit": self.fit_report,
            "cascade": None,
            "previous_version": ({"version": old.get("version"), "test_metrics": old.get("test_metrics")}
                                 if old else None),
            **(extra or {}),
        }
        if self.second is not None:
            pin = save_second_stage(model_dir, version, self.second)
            manifest["cascade"] = {**pin, "threshold": self.cascade_threshold, **self.cascade_report}
        write_linear_model(model_dir, self.coef, self.intercept, self.features, manifest)
        remove_stale_stages(model_dir, keep=manifest["cascade"]["dir"] if manifest["cascade"] else None)
        self.manifest = manifest
        return manifest

    @classmethod
    def load(cls, model_dir: Path, *, embedder: TextEncoder | None = None,
             second_embedder: TextEncoder | None = None) -> "EmbeddingRouter":
        """Load a saved router; a second stage (``cascade`` in the manifest) gets ``second_embedder`` (default: the
        all-mpnet-base-v2 + MiniLM encoder; its weights are unpacked and checked here, its session starts on the
        first query that needs it, or in :meth:`warm`)."""
        from safetensors.numpy import load_file

        model_dir = Path(model_dir)
        path = model_dir / MANIFEST_FILE
        if not path.exists() or not (model_dir / CLASSIFIER_FILE).exists():
            raise ConfigError(f"no router model in {model_dir}; run `domainroute router train`")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("kind") != "domainroute.router" or manifest.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a format-{FORMAT} router manifest; run `domainroute router train`")
        check_pinned_files(model_dir, manifest, "run `domainroute router train`")
        arrays = load_file(str(model_dir / CLASSIFIER_FILE))
        router = cls(embedder, lexical=bool(manifest.get("lexical")))
        router.routes = list(manifest["routes"])
        if router.lexical:
            vocab = json.loads((model_dir / LEXICON_FILE).read_text(encoding="utf-8"))
            router.features = LexicalFeatures.from_saved(vocab, arrays)
        router.coef, router.intercept = arrays["coef"], arrays["intercept"]
        lexical_dim = router.features.dim if router.features is not None else 0
        if router.coef.shape[0] != len(router.routes) or router.coef.shape[1] <= lexical_dim:
            raise ConfigError(f"{model_dir}: classifier shape {router.coef.shape} does not fit {len(router.routes)} "
                              "routes and the saved features; run `domainroute router train`")
        router.temperature = float(manifest["temperature"])
        th = manifest["thresholds"]
        router.thresholds = RouterThresholds(abstain=float(th["abstain"]), follow_up=float(th["follow_up"]),
                                             min_confidence={k: float(v) for k, v in th["min_confidence"].items()})
        router.fit_report = dict(manifest.get("fit", {}))
        router.manifest = manifest
        cascade = manifest.get("cascade")
        if cascade:
            stage_dir = model_dir / str(cascade["dir"])
            if stage_files(stage_dir) != cascade.get("files"):
                raise ConfigError(f"{stage_dir} is missing or is not the second stage {path} was saved with; "
                                  "run `domainroute router train`")
            if second_embedder is None:
                from domainroute.embeddings import checked_second_stage_embedder

                second_embedder = checked_second_stage_embedder()
            router.second = cls.load(stage_dir, embedder=second_embedder)
            if router.second.routes != router.routes:
                raise ConfigError(f"{stage_dir} has routes {router.second.routes}, the first stage "
                                  f"{router.routes}; run `domainroute router train`")
            router.cascade_threshold = float(cascade["threshold"])
            router.cascade_report = {k: v for k, v in cascade.items()
                                     if k not in ("dir", "threshold", "encoder", "files")}
        return router

    def warm(self) -> None:
        """Load every encoder this router uses (both stages), so no user query pays for it."""
        self.route("warm up")
        if self.second is not None:
            self.second.route("warm up")


# ---------------------------------------------------------------------------------------------------------------
# pack-level entry points (the CLI calls these)


def stage_files(stage_dir: Path) -> dict[str, str]:
    """sha256 of each file of a saved stage (how the first stage's manifest pins its second stage)."""
    names = (CLASSIFIER_FILE, LEXICON_FILE, MANIFEST_FILE)
    return {n: sha256_file(stage_dir / n) for n in names if (stage_dir / n).is_file()}


def save_second_stage(model_dir: Path, version: int, stage: Any) -> dict[str, Any]:
    """Save ``stage`` (a fitted router or escalation policy) into a folder of its own, ``second_stage-v<version>``,
    and return its pin for the first stage's manifest: ``{"dir", "encoder", "files"}``.

    The folder the previous manifest names is left alone until the new manifest is written (then
    :func:`remove_stale_stages` removes it), so a save that stops half-way never breaks the stage in use.
    """
    name = f"{SECOND_STAGE_DIR}-v{version}"
    stage_dir = Path(model_dir) / name
    if stage_dir.exists():  # a save of this version that stopped half-way
        shutil.rmtree(stage_dir)
    stage.save(stage_dir)
    return {"dir": name, "encoder": stage.encoder_name, "files": stage_files(stage_dir)}


def remove_stale_stages(model_dir: Path, *, keep: str | None) -> None:
    """Remove every second-stage folder in ``model_dir`` but ``keep`` (the one the manifest just written names)."""
    for stale in [Path(model_dir) / SECOND_STAGE_DIR, *Path(model_dir).glob(f"{SECOND_STAGE_DIR}-v*")]:
        if stale.is_dir() and stale.name != keep:
            shutil.rmtree(stale)


def write_linear_model(model_dir: Path, coef: np.ndarray, intercept: np.ndarray, features: "LexicalFeatures | None",
                       manifest: dict[str, Any]) -> None:
    """Write a linear classifier (safetensors), its learned lexicon (when it has lexical features) and, last, the
    manifest, which pins the other two by sha256 (``files``, added to ``manifest``; see :func:`check_pinned_files`)."""
    from safetensors.numpy import save

    arrays = {"coef": np.ascontiguousarray(coef), "intercept": np.ascontiguousarray(intercept)}
    if features is not None:
        arrays.update(features.arrays())
    # bytes, then a plain write: safetensors' save_file creates the file owner-only (0600)
    payload = {CLASSIFIER_FILE: save(arrays)}
    if features is not None:
        payload[LEXICON_FILE] = (json.dumps(features.vocab, ensure_ascii=False) + "\n").encode("utf-8")
    manifest["files"] = {name: hashlib.sha256(data).hexdigest() for name, data in payload.items()}
    lexicon = model_dir / LEXICON_FILE
    if features is None and lexicon.exists():
        lexicon.unlink()
    for name, data in payload.items():
        (model_dir / name).write_bytes(data)
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def check_pinned_files(model_dir: Path, manifest: dict[str, Any], fix: str) -> None:
    """ConfigError unless the files the manifest pins (``files``) have its sha256: a save that stopped before its
    manifest, or a file edited or replaced afterwards. Manifests written before pins existed (no ``files``) pass."""
    pinned = manifest.get("files")
    if pinned is None:
        return
    wrong = files_not_matching(model_dir, pinned)
    if wrong:
        raise ConfigError(f"{', '.join(str(model_dir / name) for name in wrong)} missing or not what "
                          f"{model_dir / MANIFEST_FILE} was saved with (a save that stopped half-way?); {fix}")


def router_data_paths(pack_dir: Path) -> dict[str, Path]:
    source = Path(pack_dir) / "router" / "queries.jsonl"
    return {"source": source, **splits_mod.split_paths(source)}


def _pack_floors(pack: Pack) -> dict[str, float]:
    return {r.name: r.thresholds.min_confidence for r in pack.routes if r.kind == "domain"}


def load_split(pack_dir: Path, split: str) -> list[dict[str, str]]:
    paths = router_data_paths(pack_dir)
    if split not in splits_mod.SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(splits_mod.SPLITS)}")
    if not paths[split].exists():
        raise ConfigError(f"{paths[split]} is missing; run `domainroute router train` (it writes the splits)")
    return [{"query": r["query"], "route": r["route"]} for r in splits_mod.read_jsonl(paths[split])]


def train_router(pack_dir: Path, out_dir: Path | None = None, *, embedder: TextEncoder | None = None,
                 second_stage: bool = True, second_embedder: TextEncoder | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train on the pack's ``router/`` data and save to ``out_dir`` (default ``<pack>/router/model``).

    ``second_stage``: also train the second stage (``second_embedder``, default all-mpnet-base-v2 + MiniLM) and
    choose the cascade threshold on validation. ``progress`` gets a line per step.

    Updates the splits first if ``queries.jsonl`` has rows they do not hold (old rows never move), adds the
    pack.toml ``examples`` to training, checks every pack route has data, and records the test metrics.
    """
    pack_dir = Path(pack_dir)
    pack = load_pack(pack_dir)
    paths = router_data_paths(pack_dir)
    if not paths["source"].exists():
        raise ConfigError(f"{paths['source']} is missing: write {{\"query\", \"route\"}} lines for every route")
    if not splits_mod.splits_current(paths["source"]):
        splits_mod.split_jsonl(paths["source"], "route")
    train, validation, test = (load_split(pack_dir, s) for s in splits_mod.SPLITS)
    routes = pack.route_names
    for name, rows in (("train", train), ("validation", validation), ("test", test)):
        unknown = sorted({r["route"] for r in rows} - set(routes))
        if unknown:
            raise ConfigError(f"router/{name}.jsonl uses routes {unknown} that pack.toml does not declare; "
                              f"add a [[routes]] entry or remove those lines (pack routes: {', '.join(routes)})")
    missing = [r for r in routes if not any(e["route"] == r for e in validation)]
    if missing:
        raise ConfigError(f"routes {missing} have no validation examples; add at least 5 examples per route to "
                          f"{paths['source']} and train again")
    held_out = {splits_mod.normalise(e["query"]) for e in validation + test}
    seen = {splits_mod.normalise(e["query"]) for e in train}
    extra = []
    for r in pack.routes:
        for q in r.examples:
            if splits_mod.normalise(q) not in held_out | seen:
                extra.append({"query": q, "route": r.name})
                seen.add(splits_mod.normalise(q))

    say = progress or (lambda message: None)
    t0 = time.perf_counter()
    say(f"fitting the first stage on {len(train) + len(extra)} queries ({len(validation)} for validation)")
    router = EmbeddingRouter(embedder).fit(train + extra, routes, validation, min_confidence=_pack_floors(pack))
    if second_stage:
        if second_embedder is None:
            from domainroute.embeddings import second_stage_embedder

            second_embedder = second_stage_embedder()
        say("fitting the second stage (all-mpnet-base-v2 over every query: under a minute on 2 cores; "
            "`--no-second-stage` skips it)")
        router.add_second_stage(EmbeddingRouter(second_embedder), train + extra, validation)
        say(f"second stage fitted: queries under confidence {router.cascade_threshold:.3f} go to it "
            f"({router.cascade_report['validation_second_stage_share']:.1%} of validation)")
    train_seconds = time.perf_counter() - t0
    say(f"scoring the test split ({len(test)} queries)")
    metrics = router.evaluate(test)
    out_dir = Path(out_dir) if out_dir is not None else pack_dir / "router" / "model"
    say(f"saving to {out_dir}")
    return router.save(out_dir, extra={
        "data": {
            "sha256": sha256_files([paths["train"], paths["validation"]]),
            "files": {p.name: sha256_file(p) for p in (paths["train"], paths["validation"], paths["test"])},
            "pack_toml_sha256": sha256_file(pack_dir / "pack.toml"),
            "n_train": len(train), "n_pack_examples": len(extra), "n_validation": len(validation), "n_test": len(test),
        },
        "train_seconds": round(train_seconds, 2),
        "test_metrics": metrics,
        "latency_context": latency_context(),
    })


def load_router(model_dir: Path, pack: Pack, *, embedder: TextEncoder | None = None,
                second_embedder: TextEncoder | None = None) -> EmbeddingRouter:
    """Load a saved router for ``pack``; the pack's per-route ``min_confidence`` applies at inference."""
    router = EmbeddingRouter.load(model_dir, embedder=embedder, second_embedder=second_embedder)
    if set(router.routes) != set(pack.route_names):
        raise ConfigError(
            f"the router model in {model_dir} was trained for routes {sorted(router.routes)} but the pack declares "
            f"{sorted(pack.route_names)}; run `domainroute router train` to retrain it")
    if router.manifest.get("encoder") != router.encoder_name:
        raise ConfigError(f"the router model in {model_dir} was trained with encoder "
                          f"{router.manifest.get('encoder')!r}, "
                          f"not {router.encoder_name!r}; run `domainroute router train`")
    if router.second is not None and router.manifest["cascade"].get("encoder") != router.second.encoder_name:
        raise ConfigError(f"the router model's second stage in {model_dir} was trained with encoder "
                          f"{router.manifest['cascade'].get('encoder')!r}, not {router.second.encoder_name!r}; "
                          "run `domainroute router train`")
    assert router.thresholds is not None
    for stage in (router, router.second):
        if stage is not None and stage.thresholds is not None:
            stage.thresholds = RouterThresholds(
                abstain=stage.thresholds.abstain, follow_up=stage.thresholds.follow_up,
                min_confidence={r: _pack_floors(pack).get(r, 0.0) for r in stage.routes})
    return router


def evaluate_split(router: EmbeddingRouter, pack_dir: Path, split: str = "test") -> dict[str, Any]:
    """Metrics of ``router`` on one of the pack's splits (``domainroute router eval``)."""
    return router.evaluate(load_split(Path(pack_dir), split))
