"""Unit tests for the learned escalation policy, on synthetic fixtures and a fake encoder."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from domainroute.agents import splits
from domainroute.agents.escalation import (
    HEADS,
    LearnedEscalationPolicy,
    append_decision,
    load_escalation_policy,
    retrain,
    should_promote,
    structured_triggers,
    train_escalation,
)
from domainroute.agents.interfaces import EscalationPolicy
from domainroute.errors import ConfigError
from domainroute.pack import EscalationLimits, load_pack
from domainroute.schemas import Claim, EscalationDecision

pytestmark = pytest.mark.unit

WORDS = {
    "legal": ["lawyer", "attorney", "sue", "court", "lawsuit", "ombudsman", "litigation", "subpoena", "regulator",
              "judge"],
    "injury": ["injured", "hurt", "bleeding", "fracture", "concussion", "whiplash", "ambulance", "stitches", "bruised",
               "wounded"],
    "misstatement": ["pretend", "backdate", "lie", "hide", "fake", "exaggerate", "conceal", "omit", "fabricate",
                     "misreport"],
    "dispute": ["disagree", "contest", "appeal", "unfair", "lowball", "reject", "dispute", "challenge", "wrong",
                "undervalued"],
    "asks_person": ["human", "person", "agent", "representative", "manager", "supervisor", "callback", "someone",
                    "operator", "staff"],
    "vulnerability": ["scared", "crisis", "homeless", "desperate", "alone", "overwhelmed", "grieving", "suicidal",
                      "elderly", "disabled"],
    "none": ["status", "deductible", "coverage", "document", "form", "upload", "question", "receipt", "photos",
             "estimate", "address", "password", "invoice", "portal", "mail", "schedule", "repair", "shop", "glass",
             "copay"],
}
TEMPLATES = ["about my claim, {a} {b}", "{a} regarding the {b} issue", "hello, {a} and {b}"]
LINES = ["auto", "home", None, "health"]
LIMITS = EscalationLimits()


class FakeEmbedder:
    """Deterministic hashed bag of words: the same interface as the real encoder, no model to load."""

    name = "fake-hash-embedder"
    dim = 64
    salt = b""

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                seed = int.from_bytes(hashlib.sha256(self.salt + word.encode()).digest()[:8], "little")
                out[i] += np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            norm = np.linalg.norm(out[i])
            out[i] = out[i] / norm if norm else out[i]
        return out


class OtherFakeEmbedder(FakeEmbedder):
    """A second, different encoder for the second stage (another hash salt and size)."""

    name = "fake-hash-embedder-2"
    dim = 96
    salt = b"2"


def claim(line: str | None, **over) -> dict | None:
    if line is None:
        return None
    return {"line": line, "amount": 1000.0, "policy_age_days": 400, "prior_claims_12m": 0, "contacts_on_claim": 1,
            **over}


def make_rows() -> list[dict]:
    rows = []
    for trig, words in WORDS.items():
        for i, a in enumerate(words):
            for j, template in enumerate(TEMPLATES):
                line = LINES[(i + j) % len(LINES)]
                # the data rule the model must learn from the line: an injury on a health claim is routine
                triggers = [] if trig == "none" or (trig == "injury" and line == "health") else [trig]
                rows.append({"query": template.format(a=a, b=words[(i + j + 1) % len(words)]), "claim": claim(line),
                             "escalate": bool(triggers), "triggers": triggers})
    for i, (over, trig) in enumerate([({"amount": 30000.0}, "large_loss"), ({"policy_age_days": 5}, "new_policy"),
                                      ({"prior_claims_12m": 4}, "frequent_claims"), ({"contacts_on_claim": 6},
                                                                                      "repeat_contact")] * 5):
        rows.append({"query": f"checking the {WORDS['none'][i % 20]} again", "claim": claim("auto", **over),
                     "escalate": True, "triggers": [trig]})
    return rows


@pytest.fixture(scope="module")
def fitted() -> LearnedEscalationPolicy:
    parts = splits.assign_splits(make_rows(), splits.primary_trigger)
    return LearnedEscalationPolicy(LIMITS, FakeEmbedder()).fit(parts["train"], parts["validation"])


def test_implements_escalation_protocol(fitted: LearnedEscalationPolicy) -> None:
    assert isinstance(fitted, EscalationPolicy)


@pytest.mark.parametrize("over, expected", [
    ({"amount": 24999.99}, []), ({"amount": 25000.0}, ["large_loss"]),
    ({"policy_age_days": 29}, ["new_policy"]), ({"policy_age_days": 30}, []),
    ({"prior_claims_12m": 2}, []), ({"prior_claims_12m": 3}, ["frequent_claims"]),
    ({"contacts_on_claim": 3}, []), ({"contacts_on_claim": 4}, ["repeat_contact"]),
])
def test_structured_triggers_apply_limits_exactly(over: dict, expected: list[str]) -> None:
    assert structured_triggers(Claim(**claim("auto", **over)), LIMITS) == expected


def test_structured_limits_are_per_line() -> None:
    assert structured_triggers(Claim(**claim("home", amount=30000.0)), LIMITS) == []
    assert structured_triggers(Claim(**claim("health", amount=100000.0)), LIMITS) == ["large_loss"]
    assert structured_triggers(None, LIMITS) == []


def test_text_triggers_are_learned(fitted: LearnedEscalationPolicy) -> None:
    cases = [("my attorney says we go to court", "legal"), ("please get me a human supervisor", "asks_person"),
             ("I disagree, the lowball offer is unfair", "dispute"),
             ("can we backdate it and hide the leak", "misstatement"),
             ("I am alone and in crisis", "vulnerability")]
    for query, trig in cases:
        d = fitted.decide(query, None)
        assert isinstance(d, EscalationDecision)
        assert d.escalate and trig in d.reasons, (query, d)
        assert d.reasons == sorted(d.reasons) and 0.0 <= d.score <= 1.0
    quiet = fitted.decide("question about the upload form status", claim("auto"))
    assert not quiet.escalate and quiet.reasons == []


def test_injury_depends_on_the_claim_line(fitted: LearnedEscalationPolicy) -> None:
    text = "my passenger was injured, bleeding with a concussion"
    assert "injury" in fitted.decide(text, claim("auto")).reasons
    assert "injury" in fitted.decide(text, None).reasons
    assert "injury" not in fitted.decide(text, claim("health")).reasons


def test_structured_trigger_escalates_with_full_score(fitted: LearnedEscalationPolicy) -> None:
    d = fitted.decide("question about the upload form status", claim("home", amount=60000.0, contacts_on_claim=5))
    assert d.escalate and d.score == 1.0 and d.reasons == ["large_loss", "repeat_contact"]


def test_score_is_half_at_the_threshold(fitted: LearnedEscalationPolicy) -> None:
    for row in make_rows()[::7]:
        d = fitted.decide(row["query"], None)
        assert d.escalate == (d.score >= 0.5), d


def test_bad_input_is_a_value_error(fitted: LearnedEscalationPolicy) -> None:
    with pytest.raises(ValueError, match="query is empty"):
        fitted.decide("  ", None)
    with pytest.raises(ValueError):
        fitted.decide("hello", {"line": "boat", "amount": 1, "policy_age_days": 1, "prior_claims_12m": 0,
                                "contacts_on_claim": 1})


def test_evaluate_reports_the_agreed_metrics(fitted: LearnedEscalationPolicy) -> None:
    m = fitted.evaluate(make_rows())
    for key in ("recall", "precision", "per_trigger_recall", "p50_ms", "p95_ms", "ece", "text_recall"):
        assert key in m
    assert m["per_trigger_recall"]["large_loss"] == 1.0
    assert m["recall"] >= 0.9


def test_fit_rejects_inconsistent_rows() -> None:
    rows = make_rows()
    with pytest.raises(ValueError, match="escalate=True but triggers=\\[\\]"):
        LearnedEscalationPolicy(LIMITS, FakeEmbedder()).fit(rows + [{"query": "x", "claim": None, "escalate": True,
                                                                     "triggers": []}], rows)
    with pytest.raises(ValueError, match="unknown triggers"):
        LearnedEscalationPolicy(LIMITS, FakeEmbedder()).fit(rows + [{"query": "x", "claim": None, "escalate": True,
                                                                     "triggers": ["angry"]}], rows)


def test_save_load_round_trip(fitted: LearnedEscalationPolicy, tmp_path: Path) -> None:
    manifest = fitted.save(tmp_path / "m", extra={"test_metrics": {"recall": 1.0}})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["classifier.safetensors", "lexicon.json",
                                                                 "manifest.json"]
    assert manifest["heads"] == list(HEADS) and manifest["version"] == 1 and set(manifest["thresholds"]) == set(HEADS)
    loaded = LearnedEscalationPolicy.load(tmp_path / "m", LIMITS, embedder=FakeEmbedder())
    for row in make_rows()[::11]:
        assert loaded.decide(row["query"], row["claim"]) == fitted.decide(row["query"], row["claim"])
    again = fitted.save(tmp_path / "m")
    assert again["version"] == 2 and again["previous_version"]["test_metrics"] == {"recall": 1.0}


def test_files_that_do_not_match_the_manifest_are_refused_at_load(fitted: LearnedEscalationPolicy,
                                                                  tmp_path: Path) -> None:
    assert set(fitted.save(tmp_path / "m")["files"]) == {"classifier.safetensors", "lexicon.json"}
    (tmp_path / "m" / "lexicon.json").write_text("{}", encoding="utf-8")  # as a save that stopped half-way leaves it
    with pytest.raises(ConfigError, match="lexicon.json missing or not what .*manifest.json was saved with.*retrain"):
        LearnedEscalationPolicy.load(tmp_path / "m", LIMITS, embedder=FakeEmbedder())


def test_load_missing_model_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no escalation model"):
        LearnedEscalationPolicy.load(tmp_path / "none", LIMITS, embedder=FakeEmbedder())


def test_append_decision_validates_and_appends(tmp_path: Path) -> None:
    log = tmp_path / "log" / "decisions.jsonl"
    rec = append_decision(log, "my lawyer will call", claim("auto"), True, ["legal"], "reviewer:ana")
    append_decision(log, "all good thanks", None, False, [], "reviewer:ana")
    lines = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 2 and lines[0] == rec and rec["claim"]["line"] == "auto" and rec["source"] == "reviewer:ana"
    with pytest.raises(ValueError, match="unknown triggers"):
        append_decision(log, "q", None, True, ["angry"], "reviewer:ana")
    with pytest.raises(ValueError, match="escalate=False"):
        append_decision(log, "q", None, False, ["legal"], "reviewer:ana")
    with pytest.raises(ValueError, match="source"):
        append_decision(log, "q", None, False, [], "")


def test_should_promote_rule() -> None:
    cur = {"recall": 0.98, "precision": 0.90}
    assert should_promote({"recall": 0.97, "precision": 0.99}, cur)[0] is False
    assert should_promote({"recall": 0.99, "precision": 0.70}, cur)[0] is False
    assert should_promote({"recall": 0.98, "precision": 0.85}, cur)[0] is True
    assert should_promote({"recall": 0.5, "precision": 0.5}, None)[0] is True


# --- pack level: train_escalation, load, retrain -----------------------------------------------------------------


def write_pack(root: Path) -> Path:
    (root / "escalation").mkdir(parents=True)
    (root / "pack.toml").write_text(
        'name = "tiny"\nrefusal = "Sorry."\n[[routes]]\nname = "out_of_scope"\nkind = "refusal"\ndescription = "x"\n'
        "[escalation.limits]\nlarge_loss = { auto = 25000, home = 50000, health = 100000 }\nnew_policy_days = 30\n"
        "frequent_claims_12m = 3\nrepeat_contact = 4\n", encoding="utf-8")
    splits.write_jsonl(root / "escalation" / "decisions.jsonl", make_rows())
    return root


def test_train_load_and_retrain_refuses_a_worse_candidate(tmp_path: Path) -> None:
    pack_dir = write_pack(tmp_path / "pack")
    manifest = train_escalation(pack_dir, embedder=FakeEmbedder(), second_embedder=OtherFakeEmbedder())
    model_dir = pack_dir / "escalation" / "model"
    assert manifest["test_metrics"]["recall"] >= 0.75 and len(manifest["data"]["sha256"]) == 64
    # these rows are separable by the first stage alone: validation finds no band worth a second stage, so none is
    # saved, loaded or warmed
    assert manifest["cascade"] is None and not list(model_dir.glob("second_stage*"))
    policy = load_escalation_policy(model_dir, load_pack(pack_dir), embedder=FakeEmbedder())
    assert policy.second is None
    assert policy.decide("my attorney says we go to court", None).escalate

    test_rows = splits.read_jsonl(pack_dir / "escalation" / "test.jsonl")
    log = tmp_path / "human.jsonl"
    # a reviewer batch that (wrongly) clears near-copies of every escalated test query: trains only, test fixed
    for r in test_rows:
        if r["escalate"]:
            append_decision(log, r["query"] + " thanks", None, False, [], "reviewer:batch-7")
    first = test_rows[0]
    append_decision(log, first["query"], first["claim"], first["escalate"], first["triggers"],
                    "reviewer:batch-7")  # repeats a test row: skipped
    before = (model_dir / "manifest.json").read_text(encoding="utf-8")
    result = retrain(pack_dir, log, embedder=FakeEmbedder())
    assert result.promoted is False and "the current model stays" in result.reason
    assert result.log_rows_skipped_held_out == 1
    assert (model_dir / "manifest.json").read_text(encoding="utf-8") == before


def test_two_stages_train_load_and_retrain_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the synthetic rows never need a second stage (band 0 drops it); force one to run the pack-level path
    monkeypatch.setattr(LearnedEscalationPolicy, "_choose_cascade_band",
                        lambda self, validation: (0.9, {"validation_second_stage_share": 0.0}))
    pack_dir = write_pack(tmp_path / "pack")
    model_dir = pack_dir / "escalation" / "model"
    manifest = train_escalation(pack_dir, embedder=FakeEmbedder(), second_embedder=OtherFakeEmbedder())
    assert manifest["cascade"]["dir"] == "second_stage-v1" and manifest["cascade"]["band"] == 0.9
    assert "thresholds_from" in (model_dir / "second_stage-v1" / "manifest.json").read_text(encoding="utf-8")
    policy = load_escalation_policy(model_dir, load_pack(pack_dir), embedder=FakeEmbedder(),
                                    second_embedder=OtherFakeEmbedder())
    assert policy.second is not None and policy.cascade_band == 0.9
    log = tmp_path / "human.jsonl"
    for i, w in enumerate(WORDS["legal"]):
        append_decision(log, f"the {w} from the {WORDS['none'][i]} office wrote", None, True, ["legal"], "reviewer:ana")
    steps: list[str] = []
    result = retrain(pack_dir, log, embedder=FakeEmbedder(), second_embedder=OtherFakeEmbedder(),
                     progress=steps.append)
    assert result.promoted is True, result.reason
    assert steps[0].startswith("fitting the first stage") and "fold 5/5" in steps[-2] and steps[-1].startswith(
        "second stage kept, band 0.900")
    after = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    assert after["version"] == 2 and after["cascade"]["dir"] == "second_stage-v2"  # the current model's stages kept
    assert sorted(p.name for p in model_dir.glob("second_stage*")) == ["second_stage-v2"]


def test_retrain_promotes_a_candidate_that_keeps_recall(tmp_path: Path) -> None:
    pack_dir = write_pack(tmp_path / "pack")
    train_escalation(pack_dir, embedder=FakeEmbedder(), second_stage=False)
    log = tmp_path / "human.jsonl"
    for i, w in enumerate(WORDS["legal"]):
        append_decision(log, f"the {w} from the {WORDS['none'][i]} office wrote", None, True, ["legal"], "reviewer:ana")
    result = retrain(pack_dir, log, embedder=FakeEmbedder())
    assert result.promoted is True, result.reason
    manifest = json.loads((pack_dir / "escalation" / "model" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["version"] == 2 and manifest["previous_version"]["version"] == 1
    assert manifest["previous_version"]["test_metrics"]["recall"] == result.current_metrics["recall"]
    assert manifest["data"]["human_log"]["rows_used"] == 10


def test_retrain_without_a_log_says_where_to_write_one(tmp_path: Path) -> None:
    pack_dir = write_pack(tmp_path / "pack")
    with pytest.raises(ConfigError, match="append_decision"):
        retrain(pack_dir, tmp_path / "missing.jsonl", embedder=FakeEmbedder())


def test_fast_inference_path_matches_the_training_design(fitted: LearnedEscalationPolicy) -> None:
    rows = make_rows()[::9]
    queries, claims = [r["query"] for r in rows], [Claim(**r["claim"]) if r["claim"] else None for r in rows]
    np.testing.assert_allclose(fitted._probs_fast(queries, claims), fitted._probs(fitted._design(queries, claims)),
                               rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def two_stage() -> tuple[LearnedEscalationPolicy, list[dict]]:
    """Two fitted stages with the band at the median first-stage score of the text-only escalations (the synthetic
    rows are separable, so the band chosen on them is 0; here the cascade's mechanics are under test)."""
    parts = splits.assign_splits(make_rows(), splits.primary_trigger)
    policy = LearnedEscalationPolicy(LIMITS, FakeEmbedder()).fit(parts["train"], parts["validation"])
    policy.second = LearnedEscalationPolicy(LIMITS, OtherFakeEmbedder()).fit(parts["train"], parts["validation"])
    rows = parts["validation"] + parts["test"]
    scores = sorted(d.score for r in rows if not r["triggers"] or not set(r["triggers"]) & {
        "large_loss", "new_policy", "frequent_claims", "repeat_contact"}
        for d in [policy.decide(r["query"], r["claim"])] if d.escalate)
    policy.cascade_band = float(scores[len(scores) // 2])  # exactly a row's score: that row stays with the first stage
    return policy, rows


def test_a_second_stage_that_validation_finds_no_use_for_is_dropped() -> None:
    parts = splits.assign_splits(make_rows(), splits.primary_trigger)
    policy = LearnedEscalationPolicy(LIMITS, FakeEmbedder()).fit(parts["train"], parts["validation"])
    policy.add_second_stage(LearnedEscalationPolicy(LIMITS, OtherFakeEmbedder()), parts["train"], parts["validation"])
    assert policy.cascade_band == 0.0 and policy.second is None
    assert policy.cascade_report["validation_recall"] == 1.0


def test_second_stage_decides_only_doubtful_text_escalations(two_stage) -> None:
    policy, rows = two_stage
    assert policy.second is not None
    sent = kept_clear = at_band = 0
    for r in rows:
        c = Claim(**r["claim"]) if r["claim"] else None
        structured = structured_triggers(c, LIMITS)
        p = policy._probs_fast([r["query"]], [c])[0]
        first = policy._decision(p, structured, policy.thresholds)
        decided = policy.decide(r["query"], r["claim"])
        if first.escalate and not structured and first.score < policy.cascade_band:
            sent += 1
            assert decided == policy.second.decide(r["query"], r["claim"])
        else:
            assert decided == first  # clear cases and every structured trigger stay with the first stage
            kept_clear += first.escalate and not structured
            at_band += first.escalate and not structured and first.score == policy.cascade_band
    assert sent > 0 and kept_clear > 0 and at_band >= 1  # both branches ran, a row exactly at the band stayed
    assert any(structured_triggers(Claim(**r["claim"]) if r["claim"] else None, LIMITS) for r in rows)
    metrics = policy.evaluate(rows, timed=False)
    assert metrics["second_stage_share"] == pytest.approx(sent / len(rows), abs=1e-4)
    timed = policy.evaluate(rows, timed=True)
    assert {k: timed[k] for k in ("recall", "precision", "second_stage_share")} == \
        {k: metrics[k] for k in ("recall", "precision", "second_stage_share")}


def test_a_band_of_zero_is_the_first_stage_alone(two_stage) -> None:
    policy, rows = two_stage
    alone = copy.copy(policy)
    alone.cascade_band = 0.0
    differ = 0
    for r in rows:
        c = Claim(**r["claim"]) if r["claim"] else None
        p = policy._probs_fast([r["query"]], [c])[0]
        first = policy._decision(p, structured_triggers(c, LIMITS), policy.thresholds)
        assert alone.decide(r["query"], r["claim"]) == first
        differ += policy.decide(r["query"], r["claim"]) != first
    assert differ > 0  # the forced band does hand decisions to the second stage


def test_warm_runs_both_stages(two_stage) -> None:
    policy, _ = two_stage
    calls: list[str] = []

    class Spy:
        def __init__(self, inner, tag):
            self.inner, self.tag, self.name, self.dim = inner, tag, inner.name, inner.dim

        def encode(self, texts):
            calls.append(self.tag)
            return self.inner.encode(texts)

    spied = copy.copy(policy)
    spied._embedder = Spy(policy.embedder, "first")
    spied.second = copy.copy(policy.second)
    spied.second._embedder = Spy(policy.second.embedder, "second")
    spied.warm()
    assert calls == ["first", "second"]


def test_thresholds_sit_between_validation_rows(fitted: LearnedEscalationPolicy) -> None:
    parts = splits.assign_splits(make_rows(), splits.primary_trigger)
    rows = [{**r, "claim": Claim(**r["claim"]) if r["claim"] else None} for r in parts["validation"]]
    probs = fitted._score_rows(rows).probs  # the probabilities the thresholds were chosen on
    for j in range(len(HEADS)):
        assert not np.isclose(probs[:, j], fitted.thresholds[j], rtol=0, atol=1e-9).any(), HEADS[j]


def test_a_changed_or_missing_second_stage_is_refused_at_load(tmp_path: Path, two_stage) -> None:
    policy, _ = two_stage
    model_dir = tmp_path / "model"
    policy.save(model_dir)
    load = lambda: LearnedEscalationPolicy.load(model_dir, LIMITS, embedder=FakeEmbedder(),  # noqa: E731
                                                second_embedder=OtherFakeEmbedder())
    assert load().cascade_band == policy.cascade_band
    policy.save(model_dir)  # version 2: its own stage folder, the first one removed once the manifest names it
    assert sorted(p.name for p in model_dir.glob("second_stage*")) == ["second_stage-v2"]
    with pytest.raises(ConfigError, match="trained with encoder"):
        LearnedEscalationPolicy.load(model_dir, LIMITS, embedder=FakeEmbedder(), second_embedder=FakeEmbedder())
    stage_manifest = model_dir / "second_stage-v2" / "manifest.json"
    stage_manifest.write_text(stage_manifest.read_text(encoding="utf-8").replace('"version": 1', '"version": 7'),
                              encoding="utf-8")
    with pytest.raises(ConfigError, match="not the second stage"):
        load()
    shutil.rmtree(model_dir / "second_stage-v2")
    with pytest.raises(ConfigError, match="is missing"):
        load()
    one_stage = copy.copy(policy)
    one_stage.second = None
    one_stage.save(model_dir)  # saving without a second stage removes a stale folder
    assert not list(model_dir.glob("second_stage*")) and load().second is None
