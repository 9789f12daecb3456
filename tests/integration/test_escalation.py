"""The committed escalation model on the real encoder: test-split targets, the line rule, retraining."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from domainroute.agents import splits
from domainroute.agents.escalation import (
    LearnedEscalationPolicy,
    append_decision,
    escalation_data_paths,
    load_escalation_policy,
    load_split,
    retrain,
)
from domainroute.agents.router import sha256_files
from domainroute.pack import load_pack
from domainroute.settings import BUNDLED_PACK

pytestmark = pytest.mark.integration

MODEL_DIR = BUNDLED_PACK / "escalation" / "model"
TEXT_TRIGGERS = ("legal", "injury", "misstatement", "dispute", "asks_person", "vulnerability")
ROUTINE = {"amount": 1200.0, "policy_age_days": 400, "prior_claims_12m": 0, "contacts_on_claim": 1}


@pytest.fixture(scope="module")
def policy() -> LearnedEscalationPolicy:
    return load_escalation_policy(MODEL_DIR, load_pack(BUNDLED_PACK))


@pytest.fixture(scope="module")
def test_metrics(policy: LearnedEscalationPolicy) -> dict:
    return policy.evaluate(load_split(BUNDLED_PACK, "test"), timed=False)  # timings live in benchmarks/


def test_committed_manifest_matches_the_data(test_metrics: dict) -> None:
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text(encoding="utf-8"))
    paths = escalation_data_paths(BUNDLED_PACK)
    assert manifest["data"]["sha256"] == sha256_files([paths["train"], paths["validation"]])
    assert manifest["test_metrics"]["recall"] == pytest.approx(test_metrics["recall"], abs=0.01)


def test_targets_on_the_test_split(test_metrics: dict) -> None:
    assert test_metrics["recall"] >= 0.97
    assert test_metrics["precision"] >= 0.85
    for trigger, caught in test_metrics["per_trigger_escalated"].items():
        assert caught >= 0.9, trigger  # every trigger's rows are escalated
    for trigger in ("large_loss", "new_policy", "frequent_claims", "repeat_contact"):
        assert test_metrics["per_trigger_recall"][trigger] == 1.0  # the limits are applied exactly


def test_each_trigger_is_named_as_a_reason(test_metrics: dict) -> None:
    for trigger, recall in test_metrics["per_trigger_recall"].items():
        assert recall >= 0.9, trigger


@pytest.mark.parametrize("query", [
    "The other driver hit me and I fractured my wrist.",
    "A guest slipped on our icy steps and broke her hip.",
])
def test_injury_applies_to_auto_home_and_text_only_not_health(policy: LearnedEscalationPolicy, query: str) -> None:
    for line in ("auto", "home"):
        assert "injury" in policy.decide(query, {"line": line, **ROUTINE}).reasons, line
    assert "injury" in policy.decide(query, None).reasons
    assert "injury" not in policy.decide(query, {"line": "health", **ROUTINE}).reasons


@pytest.mark.parametrize("query, claim, expected", [
    ("my car was hit in the parking lot, small dent", {"line": "auto", **ROUTINE}, []),
    ("is an MRI at the hospital covered on my plan", None, []),
    ("my lawyer will contact you", None, ["legal"]),
    ("the adjuster denied my claim and I want to appeal", {"line": "home", **ROUTINE}, ["dispute"]),
])
def test_two_stages_on_messages_outside_every_split(policy: LearnedEscalationPolicy, query: str, claim: dict | None,
                                                   expected: list[str]) -> None:
    assert policy.second is not None  # the committed model has its all-mpnet-base-v2 stage
    assert policy.decide(query, claim).reasons == expected


def test_the_second_stage_clears_a_doubtful_escalation(policy: LearnedEscalationPolicy) -> None:
    query = "My mom is visiting, can she drive my car?"  # in no split; the first stage alone escalates it
    first = copy.copy(policy)
    first.second = None
    alone = first.decide(query, None)
    assert alone.escalate and alone.score < policy.cascade_band
    assert policy.decide(query, None) == policy.second.decide(query, None)
    assert not policy.decide(query, None).escalate


def test_structured_limits_from_the_pack(policy: LearnedEscalationPolicy) -> None:
    d = policy.decide("Where do I upload the repair invoice?", {**ROUTINE, "line": "auto", "amount": 25000.0})
    assert d.escalate and d.reasons == ["large_loss"] and d.score == 1.0
    d = policy.decide("Where do I upload the repair invoice?", {**ROUTINE, "line": "auto", "amount": 24999.0})
    assert not d.escalate


def test_retrain_refuses_a_worse_candidate(tmp_path: Path) -> None:
    pack_dir = tmp_path / "pack"
    (pack_dir / "escalation").mkdir(parents=True)
    shutil.copy(BUNDLED_PACK / "pack.toml", pack_dir / "pack.toml")
    for name in ("decisions.jsonl", "train.jsonl", "validation.jsonl", "test.jsonl"):
        shutil.copy(BUNDLED_PACK / "escalation" / name, pack_dir / "escalation" / name)
    shutil.copytree(MODEL_DIR, pack_dir / "escalation" / "model")
    before = (pack_dir / "escalation" / "model" / "manifest.json").read_text(encoding="utf-8")

    log = tmp_path / "human_decisions.jsonl"
    test_rows = splits.read_jsonl(pack_dir / "escalation" / "test.jsonl")
    for r in test_rows:  # a mislabelled reviewer batch: near-copies of escalated test messages marked routine
        if any(t in TEXT_TRIGGERS for t in r["triggers"]):
            append_decision(log, r["query"] + " Thanks.", r["claim"] if not r["claim"] else {**r["claim"], **ROUTINE},
                            False, [], "reviewer:batch-7")
    append_decision(log, test_rows[0]["query"], test_rows[0]["claim"], test_rows[0]["escalate"],
                    test_rows[0]["triggers"], "reviewer:batch-7")  # repeats a test row: skipped

    # one stage: the second stage's fit (all-mpnet-base-v2 over every row, five out-of-fold refits) would add ~100 s;
    # tests/unit/test_escalation_unit.py retrains a two-stage policy end to end on fake encoders
    result = retrain(pack_dir, log, second_stage=False)
    assert result.promoted is False, result.reason
    assert "the current model stays" in result.reason
    assert result.log_rows_skipped_held_out == 1
    assert result.candidate_metrics["recall"] < result.current_metrics["recall"]
    assert (pack_dir / "escalation" / "model" / "manifest.json").read_text(encoding="utf-8") == before
