"""The learned escalation policy: exact authority limits plus calibrated text-trigger classifiers.

Two kinds of triggers, reported as ``reasons``:

- **Structured** (``large_loss``, ``new_policy``, ``frequent_claims``, ``repeat_contact``) follow from the claim
  numbers and the pack's ``[escalation.limits]``, applied exactly: amount >= the line's ``large_loss`` limit,
  ``policy_age_days`` < ``new_policy_days``, ``prior_claims_12m`` >= ``frequent_claims_12m``,
  ``contacts_on_claim`` >= ``repeat_contact``.
- **Text** (``legal``, ``injury``, ``misstatement``, ``dispute``, ``asks_person``, ``vulnerability``) come from
  one-vs-rest logistic regressions on the sentence embedding (plus learned TF-IDF features and the claim's line of
  business, so the model can learn that an injury on a *health* claim is routine: :func:`line_counterfactuals`
  teaches it), each Platt-calibrated on the validation split, plus an "any text trigger" head. No keyword list
  decides anything.

Thresholds are chosen on the validation split, recall first: every head starts at the highest threshold that
keeps its own validation recall at ``trigger_recall_target``; then thresholds are raised one step at a time while
overall recall stays at ``recall_target``, every trigger's (named-reason) recall at ``trigger_recall_target``, and
precision improves.

**Second stage** (optional, the bundled model has one): a text-only escalation whose score falls under
``cascade_band`` is decided again by a policy of the same kind on all-mpnet-base-v2 + MiniLM embeddings (saved in
``second_stage-v<version>/``, pinned by its files' hashes in the manifest's ``cascade``). The band is chosen on
validation (best precision with the same recall targets, then the fewest second-stage calls), so clear negatives
and clear escalations cost one MiniLM pass, and only the doubtful escalations pay for the larger encoder.

``score`` in a decision is 1.0 when a structured trigger fires; otherwise the largest head score rescaled so that
0.5 sits exactly at that head's threshold (so ``escalate`` is ``score >= 0.5``), monotone in the calibrated
probability.

Learning from people: :func:`append_decision` logs a human decision; :func:`retrain` trains a candidate with the
log added to the training split (validation and test stay fixed), compares it with the current model on the
test split, and refuses to promote a candidate whose recall is lower (or whose precision collapses, see
:func:`should_promote`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from domainroute.agents import splits as splits_mod
from domainroute.agents.router import (
    LexicalFeatures,
    TextEncoder,
    check_pinned_files,
    ece,
    fit_logreg,
    latency_context,
    linear_scores,
    next_version,
    percentiles_ms,
    remove_stale_stages,
    save_second_stage,
    sha256_file,
    sha256_files,
    stage_files,
    write_linear_model,
)
from domainroute.agents.splits import STRUCTURED_TRIGGERS, TEXT_TRIGGERS
from domainroute.errors import ConfigError
from domainroute.pack import EscalationLimits, Pack, load_pack
from domainroute.schemas import Claim, EscalationDecision, validate_query

FORMAT = 1
ANY_HEAD = "any_text_trigger"
HEADS = (*TEXT_TRIGGERS, ANY_HEAD)
LINES = ("auto", "home", "health", None)
"""Claim lines the model sees as one-hot features (None: no claim, a text-only conversation)."""
CLASSIFIER_FILE = "classifier.safetensors"
LEXICON_FILE = "lexicon.json"
MANIFEST_FILE = "manifest.json"
DEFAULT_LOG = Path("escalation") / "human_decisions.jsonl"
"""Where :func:`retrain` looks for logged human decisions, relative to the pack folder, unless told otherwise."""
ALL_TRIGGERS = (*TEXT_TRIGGERS, *STRUCTURED_TRIGGERS)
THRESHOLD_SLACK = 1e-5
"""How far below a validation row's probability a threshold is placed (see ``_below_by_a_hair``)."""
FALLBACK_REASON_RATIO = 0.5
"""When only the "any text trigger" head fires, the reasons are the triggers whose probability is at least this
share of the likeliest trigger's (a reviewer sees every plausible reason, not one guess)."""

Row = dict[str, Any]


def structured_triggers(claim: Claim | None, limits: EscalationLimits) -> list[str]:
    """The authority-limit triggers a claim hits, applied exactly."""
    if claim is None:
        return []
    out = []
    limit = limits.large_loss.get(claim.line)
    if limit is None:
        raise ConfigError(f"[escalation.limits] large_loss has no limit for line {claim.line!r}; add one to pack.toml")
    if claim.amount >= limit:
        out.append("large_loss")
    if claim.policy_age_days < limits.new_policy_days:
        out.append("new_policy")
    if claim.prior_claims_12m >= limits.frequent_claims_12m:
        out.append("frequent_claims")
    if claim.contacts_on_claim >= limits.repeat_contact:
        out.append("repeat_contact")
    return out


def _claim(value: Claim | dict[str, Any] | None) -> Claim | None:
    if value is None or isinstance(value, Claim):
        return value
    return Claim.model_validate(value)


def _check_row(row: Row, where: str) -> Row:
    try:
        query = validate_query(row["query"])
        claim = _claim(row.get("claim"))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc
    triggers = list(row.get("triggers") or [])
    unknown = sorted(set(triggers) - set(ALL_TRIGGERS))
    if unknown:
        raise ValueError(f"{where}: unknown triggers {unknown}; known: {', '.join(ALL_TRIGGERS)}")
    escalate = bool(row.get("escalate"))
    if escalate != bool(triggers):
        raise ValueError(f"{where}: escalate={escalate} but triggers={triggers}; an escalation names its triggers")
    return {"query": query, "claim": claim, "escalate": escalate, "triggers": triggers}


def line_counterfactuals(rows: list[Row]) -> list[Row]:
    """The guideline's line rule, as training rows: every injury row restated on a health claim is not an injury.

    The labelled data holds injury texts on auto, home and no claim, but its health-claim rows are routine medical
    questions, so nothing in it shows the model that an accident injury on a *health* claim does not escalate.
    These rows do (same text, ``line = health``, the other text triggers kept); the model still decides.
    """
    out = []
    for r in rows:
        if "injury" in r["triggers"] and (r["claim"] is None or r["claim"].line != "health"):
            claim = Claim(line="health", amount=0.0, policy_age_days=365, prior_claims_12m=0, contacts_on_claim=1)
            triggers = [t for t in r["triggers"] if t in TEXT_TRIGGERS and t != "injury"]
            out.append({"query": r["query"], "claim": claim, "escalate": bool(triggers), "triggers": triggers})
    return out


def _margin(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Rescale calibrated probabilities so that each head's threshold maps to 0.5 (monotone, 0..1)."""
    t = np.clip(t, 1e-6, 1 - 1e-6)
    return np.where(p < t, 0.5 * p / t, 0.5 + 0.5 * (p - t) / (1 - t))


class _CachedEncoder:
    """Encodes each distinct text once (the out-of-fold fits see the same texts five times)."""

    def __init__(self, inner: TextEncoder):
        self.inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, vector in zip(missing, np.asarray(self.inner.encode(missing), dtype=np.float32)):
                self._cache[text] = vector
        return np.stack([self._cache[t] for t in texts])


@dataclass
class _Scored:
    """Per-row calibrated head probabilities and the structured triggers, for threshold search and evaluation."""

    probs: np.ndarray | None  # rows x heads (None for a policy without head probabilities)
    structured: list[list[str]]
    labels: list[list[str]]
    escalate: np.ndarray
    claims: list[Claim | None] = field(default_factory=list)


class LearnedEscalationPolicy:
    """Implements :class:`domainroute.agents.interfaces.EscalationPolicy`.

    ``limits``: the pack's authority limits (``pack.escalation.limits``). ``embedder``: anything with
    ``.encode(list[str]) -> np.ndarray`` and a ``name`` (default: the shared all-MiniLM-L6-v2).
    """

    def __init__(self, limits: EscalationLimits | None = None, embedder: TextEncoder | None = None, *,
                 lexical: bool = True, line_counterfactuals: bool = True, recall_target: float = 0.97,
                 trigger_recall_target: float = 0.97, c_grid: Sequence[float] = (4.0, 16.0)):
        for name, v in (("recall_target", recall_target), ("trigger_recall_target", trigger_recall_target)):
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v}")
        self.limits = limits or EscalationLimits()
        self._embedder = embedder
        self.lexical = lexical
        self.line_counterfactuals = line_counterfactuals
        self.recall_target = recall_target
        self.trigger_recall_target = trigger_recall_target
        self.c_grid = tuple(c_grid)
        self.features: LexicalFeatures | None = None
        self.coef: np.ndarray | None = None  # heads x features
        self.intercept: np.ndarray | None = None
        self.platt: np.ndarray | None = None  # heads x 2 (a, b)
        self.thresholds: np.ndarray | None = None  # heads
        self.fit_report: dict[str, Any] = {}
        self.manifest: dict[str, Any] = {}
        self.second: LearnedEscalationPolicy | None = None
        self.cascade_band = 0.0
        """A text-only escalation with a score under this is decided by ``second`` (0: never)."""
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

    def _require_fitted(self) -> None:
        if self.coef is None or self.thresholds is None:
            raise ConfigError("the escalation policy has no model yet: call fit(...) or load it "
                              "(run `domainroute escalation retrain` or train_escalation)")

    def _dense(self, queries: list[str], claims: Sequence[Claim | None]) -> np.ndarray:
        """Sentence embedding plus the claim line one-hot (the model sees the line, not a rule)."""
        emb = np.asarray(self.embedder.encode(queries), dtype=np.float32)
        lines = np.array([[1.0 if (c.line if c else None) == line else 0.0 for line in LINES] for c in claims],
                         dtype=np.float32)
        return np.hstack([emb, lines])

    def _design(self, queries: list[str], claims: Sequence[Claim | None]):
        dense = self._dense(queries, claims)
        return dense if self.features is None else self.features.design(dense, queries)

    def _calibrate(self, z: np.ndarray) -> np.ndarray:
        assert self.platt is not None
        return 1.0 / (1.0 + np.exp(-(self.platt[:, 0] * z + self.platt[:, 1])))

    def _probs(self, design) -> np.ndarray:
        assert self.coef is not None and self.intercept is not None
        return self._calibrate(linear_scores(design, self.coef, self.intercept))

    def _probs_fast(self, queries: list[str], claims: Sequence[Claim | None]) -> np.ndarray:
        """Same as ``_probs(_design(...))`` without building sparse matrices (inference path)."""
        assert self.coef is not None and self.intercept is not None
        dense = self._dense(queries, claims)
        if self.features is None:
            return self._calibrate(dense @ self.coef.T + self.intercept)
        return self._calibrate(self.features.scores(dense, queries, self.coef, self.intercept))

    # -- training -------------------------------------------------------------------------------------------
    def fit(self, rows: list[Row], validation: list[Row], *,
            c_per_head: dict[str, float] | None = None) -> "LearnedEscalationPolicy":
        """Train on ``[{"query", "claim", "escalate", "triggers"}]``; thresholds on ``validation``.
        ``c_per_head``: fixed regularisation per head instead of the choice on validation."""
        rows = [_check_row(r, f"training row {i}") for i, r in enumerate(rows)]
        validation = [_check_row(r, f"validation row {i}") for i, r in enumerate(validation)]
        if not validation:
            raise ValueError("validation is empty; the thresholds are chosen on it")
        n_labelled = len(rows)
        if self.line_counterfactuals:
            rows = rows + line_counterfactuals(rows)
        y = np.array([[h in r["triggers"] for h in TEXT_TRIGGERS] for r in rows])
        y = np.hstack([y, y.any(axis=1, keepdims=True)])
        thin = [h for h, n in zip(HEADS, y.sum(axis=0)) if n < 5 or n > len(rows) - 5]
        if thin:
            raise ValueError(f"heads {thin} need at least 5 positive and 5 negative training rows; add labelled rows")
        queries = [r["query"] for r in rows]
        self.features = LexicalFeatures.fit(queries) if self.lexical else None
        x = self._design(queries, [r["claim"] for r in rows])
        x_va = self._design([r["query"] for r in validation], [r["claim"] for r in validation])
        y_va = np.array([[h in r["triggers"] for h in TEXT_TRIGGERS] for r in validation])
        y_va = np.hstack([y_va, y_va.any(axis=1, keepdims=True)])

        from sklearn.metrics import average_precision_score

        coefs, intercepts, platt, chosen_c = [], [], [], []
        for j, head in enumerate(HEADS):
            best = None
            for c in ((c_per_head[head],) if c_per_head else self.c_grid):
                # C by validation average precision (ranking quality), ties to the smaller C
                clf = fit_logreg(x, y[:, j].astype(int), c=c, class_weight="balanced", solver="liblinear")
                ap = average_precision_score(y_va[:, j], clf.decision_function(x_va)) if y_va[:, j].any() else 0.0
                if best is None or ap > best[0] + 1e-9:
                    best = (ap, c, clf)
            assert best is not None
            _, c, clf = best
            platt.append(_fit_platt(clf.decision_function(x_va), y_va[:, j], head))
            coefs.append(clf.coef_[0])
            intercepts.append(clf.intercept_[0])
            chosen_c.append(c)
        self.coef = np.stack(coefs).astype(np.float32)
        self.intercept = np.array(intercepts, dtype=np.float32)
        self.platt = np.array(platt, dtype=np.float32)

        scored = self._score_rows(validation, design=x_va)
        self.thresholds = self._choose_thresholds(scored)
        metrics = self._metrics(scored, self._decide_scored(scored))
        self.fit_report = {
            "n_train": n_labelled, "n_line_counterfactuals": len(rows) - n_labelled, "n_validation": len(validation),
            "lexical_features": self.features.dim if self.features else 0,
            "C": dict(zip(HEADS, chosen_c)),
            "validation": {k: metrics[k] for k in ("recall", "precision", "per_trigger_recall", "text_recall",
                                                    "text_precision", "ece")},
        }
        return self

    def _score_rows(self, rows: list[Row], *, design=None) -> _Scored:
        claims = [r["claim"] for r in rows]
        if design is None:
            design = self._design([r["query"] for r in rows], claims)
        return _Scored(probs=self._probs(design), structured=[structured_triggers(c, self.limits) for c in claims],
                       labels=[list(r["triggers"]) for r in rows], escalate=np.array([r["escalate"] for r in rows]),
                       claims=claims)

    def _decide_scored(self, s: _Scored, thresholds: np.ndarray | None = None) -> list[EscalationDecision]:
        t = self.thresholds if thresholds is None else thresholds
        assert t is not None
        return [self._decision(p, st, t) for p, st in zip(s.probs, s.structured)]

    @staticmethod
    def _decision(p: np.ndarray, structured: list[str], t: np.ndarray) -> EscalationDecision:
        n = len(TEXT_TRIGGERS)
        fired = [TEXT_TRIGGERS[k] for k in range(n) if p[k] >= t[k]]
        margins = _margin(p, t)
        if not fired and p[n] >= t[n]:
            # the "any" head fired alone: name every trigger about as likely as the likeliest one
            top = float(p[:n].max())
            fired = [TEXT_TRIGGERS[k] for k in range(n) if p[k] >= FALLBACK_REASON_RATIO * top]
        reasons = sorted(set(fired) | set(structured))
        score = 1.0 if structured else float(margins.max())
        return EscalationDecision(escalate=bool(reasons), score=min(1.0, max(0.0, score)), reasons=reasons)

    def _choose_thresholds(self, s: _Scored) -> np.ndarray:
        """Recall first (overall and per trigger on validation), then the best precision."""
        n = len(TEXT_TRIGGERS)
        y = np.array([[h in lab for h in TEXT_TRIGGERS] for lab in s.labels])
        y = np.hstack([y, y.any(axis=1, keepdims=True)])
        t = np.ones(len(HEADS))
        for j in range(len(HEADS)):  # each head: the highest threshold keeping its own recall at target
            pos = np.sort(s.probs[y[:, j], j])
            if pos.size:
                t[j] = pos[int(np.floor((1 - self.trigger_recall_target) * pos.size))]

        def feasible(th: np.ndarray) -> tuple[bool, float]:
            m = self._metrics(s, self._decide_scored(s, th))
            ok = m["recall"] >= self.recall_target and all(
                m["per_trigger_recall"][k] >= self.trigger_recall_target for k in TEXT_TRIGGERS
                if m["per_trigger_support"][k])
            return ok, m["precision"]

        ok, best_prec = feasible(t)
        if not ok:  # the any head alone rescues what it can; stop there
            return self._below_by_a_hair(s, t)
        improved = True
        while improved:  # coordinate ascent: raise one threshold to the next candidate while constraints hold
            improved = False
            for j in range(len(HEADS)):
                higher = np.unique(s.probs[:, j][s.probs[:, j] > t[j]])
                for cand in higher[:25]:
                    trial = t.copy()
                    trial[j] = cand
                    ok, prec = feasible(trial)
                    if not ok:
                        break
                    if prec > best_prec + 1e-12:
                        t, best_prec, improved = trial, prec, True
        return self._below_by_a_hair(s, t)

    def refit_thresholds_out_of_fold(self, rows: list[Row], validation: list[Row], *, folds: int = 5,
                                     include_validation: bool = True,
                                     progress: Callable[[str], None] | None = None) -> None:
        """Choose the thresholds again on validation *plus* out-of-fold scores of the training rows (each fold's
        rows scored by heads fitted on the other folds with this policy's C, calibrated by this policy's Platt
        fit): four to five times as many positives per trigger as validation alone, so the recall-first choice of
        :meth:`_choose_thresholds` (same targets) rests on a larger sample; the heads themselves do not change.
        Afterwards ``fit_report["validation"]`` describes the thresholds in use (validation rows only)."""
        self._require_fitted()
        checked = [_check_row(r, f"training row {i}") for i, r in enumerate(rows)]
        validation = [_check_row(r, f"validation row {i}") for i, r in enumerate(validation)]
        fold_of = [int(hashlib.sha256(splits_mod.normalise(r["query"]).encode("utf-8")).hexdigest(), 16) % folds
                   for r in checked]
        cached = _CachedEncoder(self.embedder)
        c_per_head = {h: float(c) for h, c in self.fit_report["C"].items()}
        z = np.zeros((len(checked), len(HEADS)))
        for f in range(folds):
            held = [i for i, fo in enumerate(fold_of) if fo == f]
            if not held:
                continue
            part = LearnedEscalationPolicy(self.limits, cached, lexical=self.lexical,
                                           line_counterfactuals=self.line_counterfactuals)
            part.fit([r for r, fo in zip(checked, fold_of) if fo != f], validation, c_per_head=c_per_head)
            assert part.coef is not None and part.intercept is not None
            held_rows = [checked[i] for i in held]
            z[held] = linear_scores(part._design([r["query"] for r in held_rows], [r["claim"] for r in held_rows]),
                                    part.coef, part.intercept)
            if progress is not None:
                progress(f"second stage: out-of-fold scores, fold {f + 1}/{folds}")
        pooled_rows = checked + validation if include_validation else checked
        probs = np.vstack([self._calibrate(z), *([self._score_rows(validation).probs] if include_validation else [])])
        scored = _Scored(probs=probs, structured=[structured_triggers(r["claim"], self.limits) for r in pooled_rows],
                         labels=[list(r["triggers"]) for r in pooled_rows],
                         escalate=np.array([r["escalate"] for r in pooled_rows]),
                         claims=[r["claim"] for r in pooled_rows])
        self.thresholds = self._choose_thresholds(scored)
        pooled = self._metrics(scored, self._decide_scored(scored))
        on_validation = self._score_rows(validation)
        validation_only = self._metrics(on_validation, self._decide_scored(on_validation))
        self.fit_report["validation"] = {k: validation_only[k] for k in (
            "recall", "precision", "per_trigger_recall", "text_recall", "text_precision", "ece")}
        self.fit_report["thresholds_from"] = {
            "rows": "validation + out-of-fold training scores" if include_validation else "out-of-fold training scores",
            "folds": folds, "n": len(pooled_rows),
            "pooled": {k: pooled[k] for k in ("recall", "precision", "text_recall", "per_trigger_recall")}}

    @staticmethod
    def _below_by_a_hair(s: _Scored, t: np.ndarray) -> np.ndarray:
        """Each threshold sits on a probability of the rows it was chosen on; move it down by at most
        ``THRESHOLD_SLACK`` (never past the midpoint to the next lower one of those rows), so a positive exactly at
        the threshold does not flip on float rounding: the batch and the one-row inference paths differ by up to
        ~1e-6 (measured 7.5e-7). A threshold of 1 (a head nothing reached) stays 1."""
        t = t.astype(np.float64).copy()
        for j in range(len(t)):
            if t[j] >= 1.0:
                continue
            below = s.probs[:, j][s.probs[:, j] < t[j]]
            floor = (t[j] + float(below.max())) / 2.0 if below.size else 0.0
            t[j] = max(floor, t[j] - THRESHOLD_SLACK)
        return t

    # -- inference ------------------------------------------------------------------------------------------
    def decide(self, query: str, claim: Claim | dict[str, Any] | None) -> EscalationDecision:
        """Escalate or not, with a 0..1 score and the sorted trigger names as reasons."""
        self._require_fitted()
        claim = _claim(claim)
        return self._decide_one(validate_query(query), claim, structured_triggers(claim, self.limits))[1]

    def _decide_one(self, text: str, claim: Claim | None,
                    structured: list[str]) -> tuple[np.ndarray, EscalationDecision, bool]:
        """The deciding stage's head probabilities, its decision, and whether the second stage decided."""
        assert self.thresholds is not None
        p = self._probs_fast([text], [claim])[0]
        decision = self._decision(p, structured, self.thresholds)
        if not self._needs_second(decision, structured):
            return p, decision, False
        assert self.second is not None and self.second.thresholds is not None
        p = self.second._probs_fast([text], [claim])[0]
        return p, self._decision(p, structured, self.second.thresholds), True

    def _needs_second(self, decision: EscalationDecision, structured: list[str]) -> bool:
        """Only a text-only escalation under the band goes on; the structured limits and clear cases never do."""
        return (self.second is not None and decision.escalate and not structured
                and float(decision.score) < self.cascade_band)

    def warm(self) -> None:
        """Load every encoder this policy uses (both stages), so no user decision pays for it."""
        self.decide("warm up", None)
        if self.second is not None:
            self.second.decide("warm up", None)

    # -- second stage ---------------------------------------------------------------------------------------
    def add_second_stage(self, second: "LearnedEscalationPolicy", rows: list[Row], validation: list[Row], *,
                         progress: Callable[[str], None] | None = None) -> "LearnedEscalationPolicy":
        """Fit ``second`` (unfitted, e.g. on a larger encoder) on the same rows, its thresholds on validation plus
        out-of-fold training scores (:meth:`refit_thresholds_out_of_fold`), and choose ``cascade_band`` on
        ``validation`` (:meth:`_choose_cascade_band`)."""
        self._require_fitted()
        if second.coef is not None or second.second is not None:
            raise ValueError("add_second_stage takes an unfitted policy")
        second.recall_target, second.trigger_recall_target = self.recall_target, self.trigger_recall_target
        second.fit(rows, validation)
        if progress is not None:
            progress(f"second stage fitted ({second.encoder_name})")
        # the second stage only ever takes escalations away: its thresholds are chosen recall-first (same targets) on
        # a pool four to five times larger than validation (measured: with validation-chosen thresholds it dropped 2
        # of 172 test escalations; chosen on out-of-fold training scores alone it kept all 179 validation ones)
        second.refit_thresholds_out_of_fold(rows, validation, progress=progress)
        self.second = second
        self.cascade_band, self.cascade_report = self._choose_cascade_band(validation)
        if self.cascade_band <= 0.0:  # validation found no band worth it: nothing to load or warm at inference
            self.second = None
        return self

    def _choose_cascade_band(self, validation: list[Row]) -> tuple[float, dict[str, Any]]:
        """Best validation precision with overall and per-trigger recall at their targets, then the fewest rows
        sent on. Candidates: every text-only escalation's first-stage score (send it and all below it on)."""
        assert self.second is not None and self.thresholds is not None and self.second.thresholds is not None
        rows = [_check_row(r, f"validation row {i}") for i, r in enumerate(validation)]
        texts, claims = [r["query"] for r in rows], [r["claim"] for r in rows]
        structured = [structured_triggers(c, self.limits) for c in claims]
        p1, p2 = self._probs_fast(texts, claims), self.second._probs_fast(texts, claims)
        d1 = [self._decision(p, st, self.thresholds) for p, st in zip(p1, structured)]
        d2 = [self.second._decision(p, st, self.second.thresholds) for p, st in zip(p2, structured)]
        eligible = sorted({float(d.score) for d, st in zip(d1, structured) if d.escalate and not st})
        cands = [0.0] + [(a + b) / 2.0 for a, b in zip(eligible, eligible[1:])] + ([1.0 + 1e-9] if eligible else [])
        scored = _Scored(probs=None, structured=structured, labels=[r["triggers"] for r in rows],
                         escalate=np.array([r["escalate"] for r in rows]), claims=claims)
        table: dict[float, tuple[bool, float, float, float]] = {}  # band -> feasible, precision, recall, share
        for band in cands:
            sent = [a.escalate and not st and float(a.score) < band for a, st in zip(d1, structured)]
            m = self._metrics(scored, [b if go else a for a, b, go in zip(d1, d2, sent)])
            ok = m["recall"] >= self.recall_target and all(
                m["per_trigger_recall"][k] >= self.trigger_recall_target for k in TEXT_TRIGGERS
                if m["per_trigger_support"][k])
            table[band] = (ok, m["precision"], m["recall"], float(np.mean(sent)))
        feasible = {b: v for b, v in table.items() if v[0]} or {0.0: table[0.0]}
        best = max(v[1] for v in feasible.values())
        band = min(b for b, v in feasible.items() if v[1] >= best - 1e-12)
        return band, {
            "validation_precision": round(best, 4),
            "validation_precision_first_stage_only": self._metrics(scored, d1)["precision"],
            "validation_recall": table[band][2],
            "validation_second_stage_share": round(table[band][3], 4),
        }

    # -- evaluation -----------------------------------------------------------------------------------------
    def evaluate(self, rows: list[Row], *, timed: bool = True) -> dict[str, Any]:
        """Recall, precision, per-trigger recall, calibration error and (``timed``) latency.

        ``timed``: one decide() per row, so p50/p95 are the real per-decision cost; otherwise one batch (faster,
        same decisions, no latency).
        """
        self._require_fitted()
        assert self.thresholds is not None
        if not rows:
            raise ValueError("evaluate needs at least one row")
        rows = [_check_row(r, f"row {i}") for i, r in enumerate(rows)]
        structured = [structured_triggers(r["claim"], self.limits) for r in rows]
        times: list[float] = []
        if timed:
            probs, decisions, sent = [], [], []
            for r, st in zip(rows, structured):  # what decide() does, keeping the deciding stage's probabilities
                t0 = time.perf_counter()
                p, d, go = self._decide_one(r["query"], r["claim"], st)
                times.append(time.perf_counter() - t0)
                probs.append(p)
                decisions.append(d)
                sent.append(go)
            all_probs = np.stack(probs)
        else:
            all_probs = self._probs_fast([r["query"] for r in rows], [r["claim"] for r in rows])
            decisions = [self._decision(p, st, self.thresholds) for p, st in zip(all_probs, structured)]
            sent = [self._needs_second(d, st) for d, st in zip(decisions, structured)]
            if any(sent):
                assert self.second is not None and self.second.thresholds is not None
                idx = [i for i, go in enumerate(sent) if go]
                p2 = self.second._probs_fast([rows[i]["query"] for i in idx], [rows[i]["claim"] for i in idx])
                for i, p in zip(idx, p2):
                    all_probs[i] = p
                    decisions[i] = self._decision(p, structured[i], self.second.thresholds)
        scored = _Scored(probs=all_probs, structured=structured, labels=[r["triggers"] for r in rows],
                         escalate=np.array([r["escalate"] for r in rows]), claims=[r["claim"] for r in rows])
        return {**self._metrics(scored, decisions), **(percentiles_ms(times) if timed else {}),
                **({"second_stage_share": round(float(np.mean(sent)), 4)} if self.second is not None else {})}

    @staticmethod
    def _metrics(s: _Scored, decisions: list[EscalationDecision]) -> dict[str, Any]:
        pred = np.array([d.escalate for d in decisions])
        truth = s.escalate
        tp = int((pred & truth).sum())
        recall = tp / max(1, int(truth.sum()))
        precision = tp / max(1, int(pred.sum()))
        text_rows = np.array([not st for st in s.structured])  # rows only the text model can escalate
        text_truth, text_pred = truth & text_rows, pred & text_rows
        per_recall, per_caught, support = {}, {}, {}
        for trig in ALL_TRIGGERS:
            idx = [i for i, lab in enumerate(s.labels) if trig in lab]
            support[trig] = len(idx)
            per_recall[trig] = round(sum(trig in decisions[i].reasons for i in idx) / len(idx), 4) if idx else None
            per_caught[trig] = round(sum(decisions[i].escalate for i in idx) / len(idx), 4) if idx else None
        health_injury = sum(1 for d, c, lab in zip(decisions, s.claims, s.labels)
                            if c is not None and c.line == "health" and "injury" in d.reasons and "injury" not in lab)
        out = {
            "n": len(decisions),
            "recall": round(recall, 4),
            "precision": round(precision, 4),
            "f1": round(2 * precision * recall / max(1e-12, precision + recall), 4),
            "accuracy": round(float((pred == truth).mean()), 4),
            "text_recall": round(int((text_pred & text_truth).sum()) / max(1, int(text_truth.sum())), 4),
            "text_precision": round(int((text_pred & text_truth).sum()) / max(1, int(text_pred.sum())), 4),
            "per_trigger_recall": per_recall,
            "per_trigger_escalated": per_caught,
            "per_trigger_support": support,
            "injury_reason_on_health_claims": health_injury,
        }
        if s.probs is not None:  # calibration of every head's probability against its label
            y_heads = np.array([[h in lab for h in TEXT_TRIGGERS] for lab in s.labels])
            y_heads = np.hstack([y_heads, y_heads.any(axis=1, keepdims=True)])
            out["ece"] = round(ece(s.probs.ravel(), y_heads.ravel()), 4)
        return out

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, model_dir: Path, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``classifier.safetensors``, ``lexicon.json`` and ``manifest.json``; returns the manifest."""
        self._require_fitted()
        assert self.coef is not None and self.intercept is not None and self.platt is not None
        assert self.thresholds is not None
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        version, old = next_version(model_dir)
        manifest = {
            "kind": "domainroute.escalation", "format": FORMAT, "version": version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "encoder": self.encoder_name, "lexical": self.features is not None,
            "heads": list(HEADS), "lines": [line or "none" for line in LINES],
            "thresholds": {h: float(t) for h, t in zip(HEADS, self.thresholds)},
            "platt": {h: [float(a), float(b)] for h, (a, b) in zip(HEADS, self.platt)},
            "limits": self.limits.model_dump(),
            "targets": {"recall": self.recall_target, "trigger_recall": self.trigger_recall_target},
            "fit": self.fit_report,
            "cascade": None,
            "previous_version": ({"version": old.get("version"), "test_metrics": old.get("test_metrics")}
                                 if old else None),
            **(extra or {}),
        }
        if self.second is not None:  # a folder of this version's own, pinned in the manifest (as the router's)
            pin = save_second_stage(model_dir, version, self.second)
            manifest["cascade"] = {**pin, "band": self.cascade_band, **self.cascade_report}
        write_linear_model(model_dir, self.coef, self.intercept, self.features, manifest)
        remove_stale_stages(model_dir, keep=manifest["cascade"]["dir"] if manifest["cascade"] else None)
        self.manifest = manifest
        return manifest

    @classmethod
    def load(cls, model_dir: Path, limits: EscalationLimits | None = None, *,
             embedder: TextEncoder | None = None,
             second_embedder: TextEncoder | None = None) -> "LearnedEscalationPolicy":
        """Load a saved policy; a second stage (``cascade`` in the manifest) gets ``second_embedder`` (default: the
        all-mpnet-base-v2 + MiniLM encoder shared with the router's second stage; its weights are checked here)."""
        from safetensors.numpy import load_file

        model_dir = Path(model_dir)
        path = model_dir / MANIFEST_FILE
        if not path.exists() or not (model_dir / CLASSIFIER_FILE).exists():
            raise ConfigError(f"no escalation model in {model_dir}; train one with "
                              "`python -c 'from domainroute.agents.escalation import train_escalation; "
                              "train_escalation(PACK_DIR)'` or `domainroute escalation retrain`")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("kind") != "domainroute.escalation" or manifest.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a format-{FORMAT} escalation manifest; retrain the model")
        if list(manifest.get("heads", [])) != list(HEADS):
            raise ConfigError(f"{path} has heads {manifest.get('heads')}, this code expects {list(HEADS)}; retrain")
        check_pinned_files(model_dir, manifest, "retrain the model (`domainroute escalation retrain`)")
        arrays = load_file(str(model_dir / CLASSIFIER_FILE))
        policy = cls(limits, embedder, lexical=bool(manifest.get("lexical")))
        if policy.lexical:
            vocab = json.loads((model_dir / LEXICON_FILE).read_text(encoding="utf-8"))
            policy.features = LexicalFeatures.from_saved(vocab, arrays)
        policy.coef, policy.intercept = arrays["coef"], arrays["intercept"]
        policy.platt = np.array([manifest["platt"][h] for h in HEADS], dtype=np.float32)
        policy.thresholds = np.array([manifest["thresholds"][h] for h in HEADS], dtype=np.float64)
        policy.recall_target = float(manifest["targets"]["recall"])
        policy.trigger_recall_target = float(manifest["targets"]["trigger_recall"])
        policy.fit_report = dict(manifest.get("fit", {}))
        policy.manifest = manifest
        cascade = manifest.get("cascade")
        if cascade:
            stage_dir = model_dir / str(cascade["dir"])
            if stage_files(stage_dir) != cascade.get("files"):
                raise ConfigError(f"{stage_dir} is missing or is not the second stage {path} was saved with; "
                                  "train the model again: `python -c 'from domainroute.agents.escalation import "
                                  "train_escalation; train_escalation(PACK_DIR)'`")
            if second_embedder is None:
                from domainroute.embeddings import checked_second_stage_embedder

                second_embedder = checked_second_stage_embedder()
            name = str(getattr(second_embedder, "name", type(second_embedder).__name__))
            if name != cascade.get("encoder"):
                raise ConfigError(f"the second stage in {stage_dir} was trained with encoder "
                                  f"{cascade.get('encoder')!r}, not {name!r}; retrain the escalation model")
            policy.second = cls.load(stage_dir, limits, embedder=second_embedder)
            policy.cascade_band = float(cascade["band"])
            policy.cascade_report = {k: v for k, v in cascade.items() if k not in ("dir", "band", "encoder", "files")}
        return policy


def score_decisions(rows: list[Row], decisions: list[EscalationDecision], limits: EscalationLimits) -> dict[str, Any]:
    """Recall, precision and per-trigger recall of any policy's decisions on labelled rows (benchmarks use it)."""
    if len(rows) != len(decisions):
        raise ValueError(f"{len(rows)} rows but {len(decisions)} decisions")
    checked = [_check_row(r, f"row {i}") for i, r in enumerate(rows)]
    scored = _Scored(probs=None, structured=[structured_triggers(r["claim"], limits) for r in checked],
                     labels=[r["triggers"] for r in checked], escalate=np.array([r["escalate"] for r in checked]),
                     claims=[r["claim"] for r in checked])
    return LearnedEscalationPolicy._metrics(scored, decisions)


def _fit_platt(z: np.ndarray, y: np.ndarray, head: str) -> tuple[float, float]:
    """Platt scaling p = sigmoid(a z + b), fitted on held-out scores (monotone: it never reorders rows)."""
    from sklearn.linear_model import LogisticRegression

    if y.all() or not y.any():
        raise ValueError(f"head {head!r} needs positive and negative validation rows for its calibration; "
                         "add labelled rows")
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(z.reshape(-1, 1), y.astype(int))
    a, b = float(clf.coef_[0, 0]), float(clf.intercept_[0])
    if a <= 0:
        raise ValueError(f"head {head!r} does not rank its validation positives above its negatives; its training "
                         "data is too thin or contradictory")
    return a, b


# ---------------------------------------------------------------------------------------------------------------
# pack-level entry points


def escalation_data_paths(pack_dir: Path) -> dict[str, Path]:
    source = Path(pack_dir) / "escalation" / "decisions.jsonl"
    return {"source": source, **splits_mod.split_paths(source)}


def load_split(pack_dir: Path, split: str) -> list[Row]:
    paths = escalation_data_paths(pack_dir)
    if split not in splits_mod.SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(splits_mod.SPLITS)}")
    if not paths[split].exists():
        raise ConfigError(f"{paths[split]} is missing; run train_escalation(pack_dir) (it writes the splits)")
    return splits_mod.read_jsonl(paths[split])


def _ensure_splits(pack_dir: Path) -> dict[str, Path]:
    paths = escalation_data_paths(pack_dir)
    if not paths["source"].exists():
        raise ConfigError(f"{paths['source']} is missing: write labelled escalation decisions first")
    if not splits_mod.splits_current(paths["source"]):
        splits_mod.split_jsonl(paths["source"], "primary_trigger")
    return paths


def _data_info(paths: dict[str, Path], extra_rows: int = 0, log_path: Path | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "sha256": sha256_files([paths["train"], paths["validation"]]),
        "files": {p.name: sha256_file(p) for p in (paths["train"], paths["validation"], paths["test"])},
    }
    if log_path is not None and Path(log_path).exists():
        info["human_log"] = {"path": str(log_path), "sha256": sha256_file(Path(log_path)), "rows_used": extra_rows}
    return info


def train_escalation(pack_dir: Path, out_dir: Path | None = None, *, embedder: TextEncoder | None = None,
                     second_stage: bool = True, second_embedder: TextEncoder | None = None,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train on the pack's ``escalation/`` splits (written if missing) and save to ``out_dir``
    (default ``<pack>/escalation/model``); returns the manifest with the test metrics. ``second_stage``: add the
    all-mpnet-base-v2 + MiniLM stage for doubtful escalations (``second_embedder`` replaces its encoder)."""
    pack_dir = Path(pack_dir)
    pack = load_pack(pack_dir)
    paths = _ensure_splits(pack_dir)
    train, validation, test = (load_split(pack_dir, s) for s in splits_mod.SPLITS)
    t0 = time.perf_counter()
    policy = _fit_policy(pack, train, validation, embedder, second_stage, second_embedder, progress)
    train_seconds = time.perf_counter() - t0
    metrics = policy.evaluate(test)
    out_dir = Path(out_dir) if out_dir is not None else pack_dir / "escalation" / "model"
    return policy.save(out_dir, extra={"data": {**_data_info(paths), "n_train": len(train),
                                                "n_validation": len(validation), "n_test": len(test)},
                                       "train_seconds": round(train_seconds, 2), "test_metrics": metrics,
                                       "latency_context": latency_context()})


def _fit_policy(pack: Pack, rows: list[Row], validation: list[Row], embedder: TextEncoder | None,
                second_stage: bool, second_embedder: TextEncoder | None,
                progress: Callable[[str], None] | None = None) -> LearnedEscalationPolicy:
    say = progress or (lambda message: None)
    say(f"fitting the first stage on {len(rows)} decisions ({len(validation)} for validation)")
    policy = LearnedEscalationPolicy(pack.escalation.limits, embedder).fit(rows, validation)
    if second_stage:
        if second_embedder is None:
            from domainroute.embeddings import second_stage_embedder

            second_embedder = second_stage_embedder()
        say("fitting the second stage (all-mpnet-base-v2 over every decision: one to two minutes on 2 cores)")
        policy.add_second_stage(LearnedEscalationPolicy(pack.escalation.limits, second_embedder), rows, validation,
                                progress=progress)
        say(f"second stage {'kept, band ' + format(policy.cascade_band, '.3f') if policy.second else 'dropped'}")
    return policy


def load_escalation_policy(model_dir: Path, pack: Pack, *, embedder: TextEncoder | None = None,
                           second_embedder: TextEncoder | None = None) -> LearnedEscalationPolicy:
    """Load a saved policy; the pack's current ``[escalation.limits]`` apply to the structured triggers."""
    policy = LearnedEscalationPolicy.load(model_dir, pack.escalation.limits, embedder=embedder,
                                          second_embedder=second_embedder)
    if policy.manifest.get("encoder") != policy.encoder_name:
        raise ConfigError(f"the escalation model in {model_dir} was trained with encoder "
                          f"{policy.manifest.get('encoder')!r}, not {policy.encoder_name!r}; retrain it")
    return policy


def append_decision(log_path: Path, query: str, claim: Claim | dict[str, Any] | None, escalate: bool,
                    triggers: Sequence[str], source: str) -> Row:
    """Append one human decision to the jsonl log that :func:`retrain` learns from; returns the logged row."""
    if not source or not isinstance(source, str):
        raise ValueError("source must say who decided, e.g. 'reviewer:alice' or 'thread:<id>'")
    row = _check_row({"query": query, "claim": claim, "escalate": escalate, "triggers": list(triggers)}, "decision")
    claim_obj = row["claim"]
    record = {"query": row["query"], "claim": claim_obj.model_dump() if claim_obj else None,
              "escalate": row["escalate"], "triggers": sorted(set(row["triggers"])), "source": source,
              "logged_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return record


@dataclass
class RetrainResult:
    promoted: bool
    reason: str
    model_dir: str
    candidate_metrics: dict[str, Any]
    current_metrics: dict[str, Any] | None
    log_rows_used: int
    log_rows_skipped_held_out: int
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MAX_PRECISION_DROP = 0.10
"""Recall-first thresholds keep a bad candidate's recall up by escalating everything; this guard catches that."""


def should_promote(candidate: dict[str, Any], current: dict[str, Any] | None, *,
                   max_precision_drop: float = MAX_PRECISION_DROP) -> tuple[bool, str]:
    """The promotion rule on test-split metrics: never lower recall, and no precision collapse."""
    if current is None:
        return True, "no current model; candidate saved"
    if candidate["recall"] < current["recall"]:
        return False, (f"candidate recall {candidate['recall']:.4f} on the test split is lower than the current "
                       f"model's {current['recall']:.4f}; the current model stays")
    if candidate["precision"] < current["precision"] - max_precision_drop:
        return False, (f"candidate precision {candidate['precision']:.4f} is more than {max_precision_drop:.2f} below "
                       f"the current model's {current['precision']:.4f} (recall {candidate['recall']:.4f} vs "
                       f"{current['recall']:.4f}); the current model stays")
    return True, (f"candidate recall {candidate['recall']:.4f} >= current {current['recall']:.4f} "
                  f"(precision {candidate['precision']:.4f} vs {current['precision']:.4f}); promoted")


def retrain(pack_dir: Path, log_path: Path | None = None, *, model_dir: Path | None = None,
            embedder: TextEncoder | None = None, max_precision_drop: float = MAX_PRECISION_DROP,
            second_stage: bool | None = None, second_embedder: TextEncoder | None = None,
            progress: Callable[[str], None] | None = None) -> RetrainResult:
    """Train a candidate on train split + logged human decisions and promote it only by :func:`should_promote`.

    Log rows that repeat a validation or test row (same query and claim) are skipped, so both stay fixed; a log
    row that repeats a training row replaces it (the human's label wins). The default log is
    ``<pack>/escalation/human_decisions.jsonl``. The split files are used as they are (new rows in
    ``decisions.jsonl`` reach the model through :func:`train_escalation`, which places them). ``second_stage``:
    None (default) trains a second stage when the current model has one. ``progress`` gets a line per step.
    """
    pack_dir = Path(pack_dir)
    pack = load_pack(pack_dir)
    log_path = Path(log_path) if log_path is not None else pack_dir / DEFAULT_LOG
    model_dir = Path(model_dir) if model_dir is not None else pack_dir / "escalation" / "model"
    if not log_path.exists():
        raise ConfigError(f"no human decisions logged at {log_path}; append_decision(...) writes them")
    paths = escalation_data_paths(pack_dir)  # the splits as they are: retraining never re-splits
    train, validation, test = (load_split(pack_dir, s) for s in splits_mod.SPLITS)
    logged = splits_mod.read_jsonl(log_path)
    held_out = {splits_mod.row_key(r) for r in validation + test}
    by_key = {splits_mod.row_key(r): r for r in train}
    used = skipped = 0
    for i, r in enumerate(logged):
        _check_row(r, f"{log_path}:{i + 1}")
        key = splits_mod.row_key(r)
        if key in held_out:
            skipped += 1
            continue
        by_key[key] = {k: r.get(k) for k in ("query", "claim", "escalate", "triggers")}
        used += 1

    current = None
    if (model_dir / MANIFEST_FILE).exists():
        current = load_escalation_policy(model_dir, pack, embedder=embedder, second_embedder=second_embedder)
    cur_metrics = current.evaluate(test, timed=False) if current is not None else None
    if second_stage is None:
        second_stage = current is not None and current.second is not None
    try:
        candidate = _fit_policy(pack, list(by_key.values()), validation, embedder, second_stage, second_embedder,
                                progress)
    except ValueError as exc:  # the logged labels leave a head untrainable: nothing to promote
        return RetrainResult(promoted=False, reason=f"the candidate could not be trained: {exc}",
                             model_dir=str(model_dir), candidate_metrics={}, current_metrics=cur_metrics,
                             log_rows_used=used, log_rows_skipped_held_out=skipped)
    cand_metrics = candidate.evaluate(test, timed=False)  # latency is the encoder's; train_escalation times it
    common = dict(model_dir=str(model_dir), candidate_metrics=cand_metrics, current_metrics=cur_metrics,
                  log_rows_used=used, log_rows_skipped_held_out=skipped)
    promote, reason = should_promote(cand_metrics, cur_metrics, max_precision_drop=max_precision_drop)
    if not promote:
        return RetrainResult(promoted=False, reason=reason, **common)
    manifest = candidate.save(model_dir, extra={
        "data": {**_data_info(paths, used, log_path), "n_train": len(by_key), "n_validation": len(validation),
                 "n_test": len(test)},
        "test_metrics": cand_metrics})
    return RetrainResult(promoted=True, reason=reason, version=manifest["version"], **common)
