"""The whole graph on the real embedded components: small model, LanceDB, learned router and policy, SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import CLI, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROUTED = [
    ("someone backed into my parked car in a lot, is that collision or comprehensive?", "auto"),
    ("a pipe burst under the kitchen sink and soaked the floor, am I covered?", "home"),
    ("do I need prior authorization before an MRI?", "health"),
    ("why was I charged a late fee on my premium bill?", "billing"),
]
ASK_KEYS = {"thread_id", "status", "route", "confidence", "adapter", "answer", "citations", "escalation", "grounding"}


def _retrieved_ids(service, thread_id: str) -> set[str]:
    values = service.graph.get_state({"configurable": {"thread_id": thread_id}}).values
    return {p["chunk_id"] for p in values["passages"]}


@pytest.mark.parametrize(("query", "route"), ROUTED)
def test_each_route_answers_with_citations_from_this_turn(service, query, route):
    result = service.ask(query)
    assert result.route == route
    assert result.status == "answered", result
    assert result.answer.strip()
    assert result.citations, f"no citation in {result.answer!r}"
    retrieved = _retrieved_ids(service, result.thread_id)
    assert {c.chunk_id for c in result.citations} <= retrieved
    assert all(c.chunk_id.startswith(c.doc_id + "@") for c in result.citations)
    assert result.adapter == service.pack.route(route).adapter_id


def test_out_of_scope_is_refused(service):
    result = service.ask("what's a good recipe for banana bread?")
    assert (result.route, result.status, result.citations) == ("out_of_scope", "refused", [])
    assert result.answer == service.pack.refusal


def test_follow_up_stays_in_the_thread_route(service):
    first = service.ask("my windshield has a crack from a rock on the highway")
    assert first.route == "auto"
    follow = service.ask("and what about the deductible?", thread_id=first.thread_id)
    assert follow.route == "auto"


def test_ask_json_contract_and_resume_from_a_new_process(data_dir):
    claim = {"line": "auto", "amount": 8000, "policy_age_days": 400, "prior_claims_12m": 0, "contacts_on_claim": 2}
    asked = run_cli(["ask", "my lawyer says you denied my claim unfairly", "--claim", json.dumps(claim), "--json"], data_dir)
    assert asked.returncode == 0, asked.stderr.decode()
    result = json.loads(asked.stdout)
    assert set(result) == ASK_KEYS
    assert result["status"] == "awaiting_human"
    assert result["escalation"]["escalate"] is True and "legal" in result["escalation"]["reasons"]
    listed = run_cli(["escalations", "list", "--json"], data_dir)
    assert result["thread_id"] in {item["thread_id"] for item in json.loads(listed.stdout)}
    resumed = run_cli(["resume", result["thread_id"], "--decision", "edit", "--text", "A specialist will call you today.", "--json"], data_dir)
    assert resumed.returncode == 0, resumed.stderr.decode()
    final = json.loads(resumed.stdout)
    assert (final["status"], final["answer"]) == ("answered", "A specialist will call you today.")
    again = run_cli(["resume", result["thread_id"], "--decision", "approve"], data_dir)
    assert again.returncode == 2 and b"not waiting for a human" in again.stderr


def test_paused_thread_survives_sigkill(data_dir):
    """A process pauses a thread, is killed with SIGKILL, and a new process resumes it with nothing lost."""
    script = (
        "import sys, time\n"
        "from domainroute.service import AgentService\n"
        "r = AgentService().ask('I want to speak to a supervisor about my roof claim now')\n"
        "print(r.thread_id, r.status, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "DOMAINROUTE_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env) as proc:
        try:
            line = proc.stdout.readline().decode().split()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    thread_id, status = line
    assert status == "awaiting_human" and proc.returncode == -signal.SIGKILL
    resumed = run_cli(["resume", thread_id, "--decision", "approve", "--json"], data_dir)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert json.loads(resumed.stdout)["status"] == "answered"


def test_unknown_thread_is_exit_2(data_dir):
    out = run_cli(["ask", "is hail covered?", "--thread", "no-such-thread"], data_dir)
    assert out.returncode == 2 and b"no conversation with thread id" in out.stderr


def test_jsonl_contracts_answer_every_line(data_dir):
    lines = [b'{"query": "my car was hit in a parking lot"}', b'{"query": "tell me a joke"}', b'{"query": ""}',
             b"\xff\xfe not utf8", b'{"query": "is my EOB wrong?"}',
             b'{"query": "headlight cracked"}',  # the router's second stage decides this one (test_router.py)
             b'{"id": 7, "query": "when is my premium due", "label": "billing"}',  # extra fields: ignored
             b'{"id": 8, "text": "when is my premium due"}']
    out = run_cli(["route", "--jsonl"], data_dir, stdin=b"\n".join(lines) + b"\n")
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(rows) == 8 and out.returncode == 2
    assert rows[0]["route"] == "auto" and rows[1]["route"] == "out_of_scope" and rows[4]["route"] == "health"
    assert rows[5]["route"] == "auto" and rows[6]["route"] == "billing"
    assert "error" in rows[2] and "error" in rows[3]
    assert rows[7] == {"error": "line 8: missing 'query' (fields given: ['id', 'text'])"}
    assert all(set(r) == {"route", "confidence"} and 0.0 <= r["confidence"] <= 1.0 for r in rows if "route" in r)

    cases = [
        {"query": "my lawyer will call you", "claim": None},
        {"query": "how do I upload photos?", "claim": {"line": "auto", "amount": 1200, "policy_age_days": 400,
                                                        "prior_claims_12m": 0, "contacts_on_claim": 1}},
        {"query": "how do I upload photos?", "claim": {"line": "home", "amount": 60000, "policy_age_days": 400,
                                                        "prior_claims_12m": 0, "contacts_on_claim": 1}},
        {"query": "status?", "claim": {"line": "auto", "amount": -5}},
        {"id": "c5", "query": "my lawyer will call you"},  # extra field ignored, a missing claim is null
        {"query": "status?", "claim": {"line": "auto", "amount": 100, "policy_age_days": 400,
                                        "prior_claims_12m": 0, "contacts_on_claim": 1, "adjuster": "x"}},
    ]
    out = run_cli(["escalation", "--jsonl"], data_dir, stdin="\n".join(json.dumps(c) for c in cases).encode() + b"\n")
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(rows) == 6
    assert rows[0]["escalate"] is True and "legal" in rows[0]["reasons"]
    assert rows[1]["escalate"] is False
    assert rows[2]["escalate"] is True and "large_loss" in rows[2]["reasons"]
    assert "error" in rows[3]
    assert rows[4] == rows[0]
    assert "adjuster" in rows[5]["error"]
    assert all(set(r) == {"escalate", "score", "reasons"} for r in rows[:3])


def test_ingesting_again_replaces_never_duplicates(tmp_path):
    from domainroute.retrievers import make_retriever
    from domainroute.retrievers.ingest import ingest
    from domainroute.settings import BUNDLED_PACK

    store = make_retriever("lancedb", store_path=tmp_path / "db")
    folder = BUNDLED_PACK / "kb" / "auto"
    first = ingest(folder, store, progress=False)
    counts = {t: store.count(tenant=t) for t in first.tenants}
    ingest(folder, store, progress=False)
    assert {t: store.count(tenant=t) for t in first.tenants} == counts
    assert sum(counts.values()) == first.chunks
