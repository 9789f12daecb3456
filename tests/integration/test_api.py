"""The claims API on a real uvicorn server at 127.0.0.1 over the real service (small model, LanceDB, SQLite)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from domainroute import client as api_client
from domainroute.api import sse
from domainroute.api.app import create_app
from domainroute.api.keys import KeyStore
from domainroute.api.problems import PROBLEM_JSON
from domainroute.api.ratelimit import RateLimit
from domainroute.api.server import background_server
from domainroute.errors import ThreadNotFoundError
from domainroute.schemas import MAX_QUERY_CHARS, AskResult
from domainroute.service import AgentService
from domainroute.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

GLASS = "is a windshield chip repair covered, and what is the deductible?"
LEGAL = "my lawyer says you denied my claim unfairly"
CLAIM = {"line": "auto", "amount": 8000, "policy_age_days": 400, "prior_claims_12m": 0, "contacts_on_claim": 2}


@pytest.fixture(scope="module")
def api(service, tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    """The real service behind the API; keys: northwind (full, ask, review roles) and harbor (full)."""
    store = KeyStore.in_dir(tmp_path_factory.mktemp("keys"))
    keys = {name: store.create(tenant, role=role)[0] for name, tenant, role in
            [("northwind", "northwind", "full"), ("ask", "northwind", "ask"), ("review", "northwind", "review"),
             ("harbor", "harbor", "full")]}
    revoked, record = store.create("northwind")
    store.revoke(record.key_id)
    keys["revoked"] = revoked
    app = create_app(service, store, rate_limit=RateLimit(rate=0))
    with background_server(app, lifetime_s=850) as url:
        ready = httpx.get(f"{url}/readyz", timeout=300)
        assert ready.status_code == 200, ready.text
        yield url, keys


def http(url: str, key: str | None) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=300)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status and body["detail"] and "Traceback" not in response.text
    return body


def retrieved(service: AgentService, thread_id: str) -> list[dict[str, Any]]:
    return service.graph.get_state({"configurable": {"thread_id": thread_id}}).values["passages"]


def test_health_readiness_and_openapi(api):
    url, _ = api
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz", timeout=60).json()
    assert ready["ready"] and set(ready["checks"].values()) == {"ok"}
    assert {"model", "store", "checkpointer"} <= set(ready["checks"])
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert {"/v1/threads", "/v1/threads/{thread_id}", "/v1/threads/{thread_id}/messages",
            "/v1/threads/{thread_id}/resume", "/v1/escalations", "/healthz", "/readyz"} <= set(paths)
    assert httpx.get(f"{url}/docs").status_code == 200


def test_thread_message_and_read_back(api, service):
    url, keys = api
    with http(url, keys["northwind"]) as c:
        thread = c.post("/v1/threads").json()
        answer = c.post(f"/v1/threads/{thread['thread_id']}/messages", json={"query": GLASS})
        assert answer.status_code == 200, answer.text
        result = AskResult.model_validate(answer.json())
        assert set(answer.json()) == set(AskResult.model_fields)
        assert result.thread_id == thread["thread_id"] and result.route == "auto" and result.status == "answered"
        passages = retrieved(service, result.thread_id)
        assert {c_.chunk_id for c_ in result.citations} <= {p["chunk_id"] for p in passages}
        assert passages and {p["tenant"] for p in passages} == {"northwind"}
        info = c.get(f"/v1/threads/{thread['thread_id']}").json()
        assert (info["status"], info["turns"], info["result"]) == ("answered", 1, answer.json())


def test_sse_is_read_by_a_real_http_client(api):
    url, keys = api
    with http(url, keys["northwind"]) as c:
        thread_id = c.post("/v1/threads").json()["thread_id"]
        with c.stream("POST", f"/v1/threads/{thread_id}/messages", json={"query": GLASS},
                      headers={"Accept": "text/event-stream"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = list(sse.parse(r.iter_lines()))
    names = [e.event for e in events]
    done = AskResult.model_validate(events[-1].data)
    tokens = [e.data["text"] for e in events if e.event == "token"]
    citations = [e for e in events if e.event == "citation"]
    assert names == ["route", "retrieval", *["token"] * len(tokens), *["citation"] * len(citations),
                     "escalation", "done"], names
    assert "".join(tokens) == done.answer and len(tokens) == len(sse.word_chunks(done.answer))
    assert [e.data["chunk_id"] for e in events if e.event == "citation"] == [c.chunk_id for c in done.citations]
    assert {c.chunk_id for c in done.citations} <= {p["chunk_id"] for p in events[1].data["passages"]}


def test_escalation_is_listed_blocks_messages_and_resumes(api):
    url, keys = api
    with http(url, keys["northwind"]) as c:
        thread_id = c.post("/v1/threads").json()["thread_id"]
        paused = c.post(f"/v1/threads/{thread_id}/messages", json={"query": LEGAL, "claim": CLAIM}).json()
        assert paused["status"] == "awaiting_human" and "legal" in paused["escalation"]["reasons"]
    with http(url, keys["review"]) as reviewer:
        listed = {e["thread_id"]: e for e in reviewer.get("/v1/escalations").json()["escalations"]}
        assert thread_id in listed and "legal" in listed[thread_id]["packet"]["reasons"]
        assert reviewer.get(f"/v1/threads/{thread_id}").json()["review"]["query"]
    with http(url, keys["northwind"]) as c:
        assert_problem(c.post(f"/v1/threads/{thread_id}/messages", json={"query": GLASS}), 409)
    with http(url, keys["review"]) as reviewer:
        done = reviewer.post(f"/v1/threads/{thread_id}/resume",
                             json={"action": "edit", "text": "A specialist will call you today.", "reviewer": "ana"})
        assert done.status_code == 200, done.text
        assert (done.json()["status"], done.json()["answer"]) == ("answered", "A specialist will call you today.")
        assert thread_id not in {e["thread_id"] for e in reviewer.get("/v1/escalations").json()["escalations"]}
        assert_problem(reviewer.post(f"/v1/threads/{thread_id}/resume", json={"action": "approve"}), 409)


def test_tenant_isolation(api, service):
    url, keys = api
    with http(url, keys["northwind"]) as nw, http(url, keys["harbor"]) as hb:
        theirs = nw.post("/v1/threads").json()["thread_id"]
        nw.post(f"/v1/threads/{theirs}/messages", json={"query": LEGAL, "claim": CLAIM})
        assert_problem(hb.get(f"/v1/threads/{theirs}"), 404)
        assert_problem(hb.post(f"/v1/threads/{theirs}/messages", json={"query": GLASS}), 404)
        assert_problem(hb.post(f"/v1/threads/{theirs}/resume", json={"action": "approve"}), 404)
        assert theirs not in {e["thread_id"] for e in hb.get("/v1/escalations").json()["escalations"]}
        mine = hb.post("/v1/threads").json()["thread_id"]
        answer = hb.post(f"/v1/threads/{mine}/messages", json={"query": GLASS}).json()
        passages = retrieved(service, mine)
        assert passages and {p["tenant"] for p in passages} == {"harbor"}
        assert all(c["doc_id"].startswith("harbor-") for c in answer["citations"])
        assert_problem(nw.get(f"/v1/threads/{mine}"), 404)
        assert nw.post(f"/v1/threads/{theirs}/resume", json={"action": "approve"}).status_code == 200


def test_error_statuses(api):
    url, keys = api
    with http(url, keys["northwind"]) as c:
        thread_id = c.post("/v1/threads").json()["thread_id"]
        path = f"/v1/threads/{thread_id}/messages"
        assert_problem(c.post(path, content=b'{"query": "x"', headers={"Content-Type": "application/json"}), 400)
        assert_problem(c.get("/v1/threads/no-such-thread"), 404)
        assert_problem(c.post(f"/v1/threads/{thread_id}/resume", json={"action": "approve"}), 409)
        assert_problem(c.post(path, json={"query": "q" * (MAX_QUERY_CHARS + 1)}), 413)
        assert_problem(c.post(path, content=b"x" * 100_000, headers={"Content-Type": "application/json"}), 413)
        assert_problem(c.post(path, json={"query": ""}), 422)
        assert_problem(c.post(path, json={"query": GLASS, "claim": {**CLAIM, "amount": -1}}), 422)
    assert_problem(httpx.post(f"{url}/v1/threads"), 401)
    assert_problem(httpx.post(f"{url}/v1/threads", headers={"Authorization": f"Bearer {keys['revoked']}"}), 401)
    with http(url, keys["ask"]) as c:
        assert_problem(c.get("/v1/escalations"), 403)
    with http(url, keys["review"]) as c:
        assert_problem(c.post("/v1/threads"), 403)


def test_rate_limit_429(service, tmp_path):
    store = KeyStore.in_dir(tmp_path)
    key, _ = store.create("northwind")
    app = create_app(service, store, rate_limit=RateLimit(rate=0.05, burst=2))
    with background_server(app, lifetime_s=120) as url, http(url, key) as c:
        assert [c.get("/v1/escalations").status_code for _ in range(2)] == [200, 200]
        limited = c.get("/v1/escalations")
        assert_problem(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1


def test_backend_down_is_503(data_dir, tmp_path):
    """No model where the settings point: readiness fails and every /v1 call answers 503 with the reason."""
    empty = tmp_path / "no-model"
    empty.mkdir()
    broken = AgentService(Settings(data_dir=data_dir, base_model_path=empty))
    store = KeyStore.in_dir(tmp_path)
    key, _ = store.create("northwind")
    with background_server(create_app(broken, store), lifetime_s=300) as url, http(url, key) as c:
        body = assert_problem(c.get("/readyz"), 503)
        assert body["checks"]["model"].startswith("error:") and "config.json" in body["checks"]["model"]
        assert_problem(c.post("/v1/threads"), 503)


def test_typed_client_sync_and_async(api):
    url, keys = api
    with api_client.Client(url, keys["northwind"]) as client:
        assert client.readyz().ready
        thread = client.create_thread()
        result = client.ask(thread.thread_id, GLASS)
        assert result.route == "auto" and result.thread_id == thread.thread_id
        events = list(client.ask_stream(thread.thread_id, LEGAL, claim=CLAIM))
        assert events[-1].event == "done" and events[-1].data["status"] == "awaiting_human"
        assert thread.thread_id in {e.thread_id for e in client.escalations().escalations}
        assert client.resume(thread.thread_id, "approve").status == "answered"
        with pytest.raises(api_client.ConflictError):
            client.resume(thread.thread_id, "approve")
        with pytest.raises(ThreadNotFoundError):
            client.get_thread("no-such-thread")

    async def run() -> None:
        async with api_client.AsyncClient(url, keys["harbor"]) as client:
            thread = await client.create_thread()
            result = await client.ask(thread.thread_id, GLASS)
            assert result.status in ("answered", "awaiting_human")
            streamed = [e async for e in client.ask_stream(thread.thread_id, "and towing?")]
            assert streamed[-1].event == "done"
            assert (await client.get_thread(thread.thread_id)).turns == 2
            with pytest.raises(api_client.PermissionDeniedError):
                async with api_client.AsyncClient(url, keys["review"]) as reviewer:
                    await reviewer.create_thread()

    asyncio.run(run())


def test_schemathesis_finds_no_server_error(api, tmp_path):
    """Property-based requests from /openapi.json (examples, coverage, fuzzing; 10 examples per operation)."""
    url, keys = api
    command = [str(Path(sys.executable).with_name("st")), "run", f"{url}/openapi.json",
               "-H", f"Authorization: Bearer {keys['northwind']}",
               "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                           "response_schema_conformance",
               "--phases", "examples,coverage,fuzzing", "--max-examples", "10", "--workers", "1",
               "--request-timeout", "120", "--suppress-health-check", "all", "--seed", "20261123"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "passed" in done.stdout
