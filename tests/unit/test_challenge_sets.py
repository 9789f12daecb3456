"""The independent challenge sets (router and escalation) are evaluation-only: well-formed, labelled by the pack's
rules, and disjoint from every training, validation and test row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainroute.agents.escalation import structured_triggers
from domainroute.agents.splits import normalise, row_key
from domainroute.pack import load_pack
from domainroute.schemas import Claim
from domainroute.settings import BUNDLED_PACK

pytestmark = pytest.mark.unit

TRIGGER_ORDER = ("legal", "injury", "large_loss", "new_policy", "frequent_claims", "misstatement", "dispute",
                 "asks_person", "repeat_contact", "vulnerability")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_router_challenge_is_labelled_with_pack_routes_and_unseen_in_training() -> None:
    pack = load_pack(BUNDLED_PACK)
    rows = _rows(BUNDLED_PACK / "router" / "challenge.jsonl")
    assert len(rows) >= 200 and all(set(r) == {"query", "route"} for r in rows)
    assert {r["route"] for r in rows} == set(pack.route_names)
    assert len({normalise(r["query"]) for r in rows}) == len(rows)
    seen = {normalise(r["query"]) for r in _rows(BUNDLED_PACK / "router" / "queries.jsonl")}
    assert not [r["query"] for r in rows if normalise(r["query"]) in seen]


def test_escalation_challenge_follows_the_limits_and_is_unseen_in_training() -> None:
    limits = load_pack(BUNDLED_PACK).escalation.limits
    rows = _rows(BUNDLED_PACK / "escalation" / "challenge.jsonl")
    assert len(rows) >= 200
    for r in rows:
        assert set(r) == {"query", "claim", "escalate", "triggers"}, r
        claim = Claim.model_validate(r["claim"]) if r["claim"] is not None else None
        assert r["escalate"] == bool(r["triggers"]), r
        assert list(r["triggers"]) == [t for t in TRIGGER_ORDER if t in r["triggers"]], r
        structured = [t for t in r["triggers"] if t in ("large_loss", "new_policy", "frequent_claims",
                                                        "repeat_contact")]
        assert structured == structured_triggers(claim, limits), r
    assert {t for r in rows for t in r["triggers"]} == set(TRIGGER_ORDER)
    seen = {row_key(r) for r in _rows(BUNDLED_PACK / "escalation" / "decisions.jsonl")}
    seen_queries = {normalise(r["query"]) for r in _rows(BUNDLED_PACK / "escalation" / "decisions.jsonl")}
    assert not [r["query"] for r in rows if row_key(r) in seen or normalise(r["query"]) in seen_queries]
