"""The claims API on a real uvicorn server at 127.0.0.1, over an AgentService built from fakes (no model, no store)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from domainroute import client as api_client
from domainroute.api import sse
from domainroute.api.app import create_app
from domainroute.api.keys import KeyStore
from domainroute.api.models import ResumeRequest
from domainroute.api.problems import PROBLEM_JSON
from domainroute.api.ratelimit import RateLimit, TokenBuckets
from domainroute.api.server import background_server
from domainroute.errors import BackendUnavailableError, InputError, ThreadNotFoundError
from domainroute.graphs.nodes import HumanDecision
from domainroute.pack import load_pack
from domainroute.schemas import MAX_QUERY_CHARS, AskResult
from domainroute.service import AgentService
from domainroute.settings import BUNDLED_PACK, Settings
from tests.fakes import KeywordRouter, ListRetriever, ScriptedChatModel, WordPolicy, passage

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]

NO_LIMIT = RateLimit(rate=0)
GLASS = "is glass chip repair covered?"
LAWYER = "my lawyer says the glass claim is wrong"


class FailingChatModel(BaseChatModel):
    """A chat backend that is down (TGI unreachable): raises BackendUnavailableError, or ``error`` if given."""

    error: str = "backend"

    @property
    def _llm_type(self) -> str:
        return "failing"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        if self.error == "bug":
            raise RuntimeError("a bug with a secret path /srv/secret.py")
        raise BackendUnavailableError("TGI at http://127.0.0.1:9 failed: connection refused")


def fake_service(data_dir: Path, *, chat_model: BaseChatModel | None = None, store_down: bool = False) -> AgentService:
    retriever = ListRetriever(
        [passage("auto-glass@v1#000", "Glass chip repair has a $0 deductible under comprehensive."),
         passage("harbor-glass@v1#000", "Harbor glass chip repair costs $50.", tenant="harbor")],
        fail=store_down,
    )
    return AgentService(
        Settings(data_dir=data_dir),
        chat_model=chat_model or ScriptedChatModel(replies=["Chip repair is free [1]."], calls=[]),
        router=KeywordRouter({"glass": "auto", "pipe": "home", "joke": "out_of_scope"}),
        escalation_policy=WordPolicy({"lawyer": "legal"}),
        retriever=retriever,
        # the pack's adapter ids, served by the scripted model (no weights are loaded in unit tests)
        adapters={r.adapter_id: Path(".") for r in load_pack(BUNDLED_PACK).domain_routes if r.adapter_id},
    )


@contextmanager
def running(data_dir: Path, *, rate_limit: RateLimit = NO_LIMIT, **service_kw: Any) -> Iterator[tuple[str, KeyStore]]:
    keys = KeyStore.in_dir(data_dir)
    app = create_app(fake_service(data_dir, **service_kw), keys, rate_limit=rate_limit)
    with background_server(app, lifetime_s=100) as url:
        yield url, keys


@pytest.fixture()
def server(tmp_path) -> Iterator[tuple[str, KeyStore]]:
    with running(tmp_path) as (url, keys):
        yield url, keys


def http(url: str, key: str | None) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status and body["type"].startswith("urn:domainroute:problem:") and body["detail"]
    assert "Traceback" not in response.text
    return body


def test_health_and_readiness(server):
    url, _ = server
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz", timeout=30).json()
    assert ready["ready"] is True and set(ready["checks"]) >= {"model", "store", "checkpointer"}
    assert set(ready["checks"].values()) == {"ok"}
    assert "/v1/threads/{thread_id}/messages" in httpx.get(f"{url}/openapi.json").json()["paths"]


def test_thread_lifecycle_returns_the_ask_json_object(server):
    url, keys = server
    key, _ = keys.create("northwind")
    with http(url, key) as c:
        created = c.post("/v1/threads")
        assert created.status_code == 201
        thread = created.json()
        assert (thread["status"], thread["turns"], thread["result"]) == ("new", 0, None)
        assert c.get(f"/v1/threads/{thread['thread_id']}").json()["status"] == "new"
        answer = c.post(f"/v1/threads/{thread['thread_id']}/messages", json={"query": GLASS})
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        result = AskResult.model_validate(answer.json())
        assert set(answer.json()) == set(AskResult.model_fields)
        assert (result.thread_id, result.status, result.route) == (thread["thread_id"], "answered", "auto")
        assert [c_.chunk_id for c_ in result.citations] == ["auto-glass@v1#000"]
        info = c.get(f"/v1/threads/{thread['thread_id']}").json()
        assert (info["status"], info["turns"], info["review"]) == ("answered", 1, None)
        assert info["result"] == answer.json()


def test_sse_stream_carries_route_retrieval_tokens_citations_escalation_done(server):
    url, keys = server
    key, _ = keys.create("northwind")
    with http(url, key) as c:
        thread_id = c.post("/v1/threads").json()["thread_id"]
        headers = {"Accept": "text/event-stream"}
        with c.stream("POST", f"/v1/threads/{thread_id}/messages", json={"query": GLASS}, headers=headers) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = list(sse.parse(r.iter_lines()))
    names = [e.event for e in events]
    assert names[:2] == ["route", "retrieval"] and names[-2:] == ["escalation", "done"]
    assert set(names) == set(sse.EVENTS)
    done = AskResult.model_validate(events[-1].data)
    assert "".join(e.data["text"] for e in events if e.event == "token") == done.answer
    assert [e.data["chunk_id"] for e in events if e.event == "citation"] == [c.chunk_id for c in done.citations]
    assert events[0].data == {"route": "auto", "confidence": done.confidence, "adapter": done.adapter}
    assert done.adapter == "insurance-auto"
    assert [p["chunk_id"] for p in events[1].data["passages"]] == ["auto-glass@v1#000"]
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))


def test_escalation_pause_list_conflict_and_resume(server):
    url, keys = server
    key, _ = keys.create("northwind")
    with http(url, key) as c:
        thread_id = c.post("/v1/threads").json()["thread_id"]
        assert_problem(c.post(f"/v1/threads/{thread_id}/resume", json={"action": "approve"}), 409)
        paused = c.post(f"/v1/threads/{thread_id}/messages", json={"query": LAWYER}).json()
        assert paused["status"] == "awaiting_human" and paused["escalation"]["reasons"] == ["legal"]
        listed = c.get("/v1/escalations").json()["escalations"]
        assert [e["thread_id"] for e in listed] == [thread_id]
        assert listed[0]["packet"]["reasons"] == ["legal"] and listed[0]["packet"]["draft"]
        assert c.get(f"/v1/threads/{thread_id}").json()["review"]["reasons"] == ["legal"]
        assert_problem(c.post(f"/v1/threads/{thread_id}/messages", json={"query": GLASS}), 409)
        done = c.post(f"/v1/threads/{thread_id}/resume", json={"action": "edit", "text": "We will call you today."})
        assert done.status_code == 200, done.text
        assert (done.json()["status"], done.json()["answer"]) == ("answered", "We will call you today.")
        assert c.get("/v1/escalations").json() == {"escalations": []}
        assert_problem(c.post(f"/v1/threads/{thread_id}/resume", json={"action": "approve"}), 409)


def test_tenants_see_only_their_threads_escalations_and_documents(server):
    url, keys = server
    northwind, _ = keys.create("northwind")
    harbor, _ = keys.create("harbor")
    with http(url, northwind) as nw, http(url, harbor) as hb:
        theirs = nw.post("/v1/threads").json()["thread_id"]
        nw.post(f"/v1/threads/{theirs}/messages", json={"query": LAWYER})
        for response in (hb.get(f"/v1/threads/{theirs}"),
                         hb.post(f"/v1/threads/{theirs}/messages", json={"query": GLASS}),
                         hb.post(f"/v1/threads/{theirs}/resume", json={"action": "approve"})):
            body = assert_problem(response, 404)
            assert body["detail"] == assert_problem(hb.get("/v1/threads/never-created"), 404)["detail"].replace(
                "never-created", theirs)
        assert hb.get("/v1/escalations").json() == {"escalations": []}
        assert [e["thread_id"] for e in nw.get("/v1/escalations").json()["escalations"]] == [theirs]
        mine = hb.post("/v1/threads").json()["thread_id"]
        with hb.stream("POST", f"/v1/threads/{mine}/messages", json={"query": GLASS},
                       headers={"Accept": "text/event-stream"}) as r:
            retrieval = next(e for e in sse.parse(r.iter_lines()) if e.event == "retrieval")
        assert [p["tenant"] for p in retrieval.data["passages"]] == ["harbor"]
        assert nw.get(f"/v1/threads/{theirs}").json()["status"] == "awaiting_human"


def test_error_statuses_are_problem_details(server):
    url, keys = server
    key, _ = keys.create("northwind")
    asker, _ = keys.create("northwind", role="ask")
    reviewer, _ = keys.create("northwind", role="review")
    revoked, record = keys.create("northwind")
    keys.revoke(record.key_id)
    with http(url, key) as c:
        thread_id = c.post("/v1/threads").json()["thread_id"]
        path = f"/v1/threads/{thread_id}/messages"
        assert_problem(c.post(path, content=b'{"query": ', headers={"Content-Type": "application/json"}), 400)
        assert_problem(c.post(path, content=b'["a list"]', headers={"Content-Type": "application/json"}), 400)
        assert_problem(c.post(path, content=b'{"query": "hi"}', headers={"Content-Type": "text/plain"}), 400)
        assert_problem(c.post(path, json={"query": "x" * (MAX_QUERY_CHARS + 1)}), 413)
        assert_problem(c.post(path, content=b"x" * 70_000, headers={"Content-Type": "application/json"}), 413)
        assert_problem(c.post(path, json={"query": "   "}), 422)
        assert_problem(c.post(path, json={"query": GLASS, "claim": {"line": "boat"}}), 422)
        assert_problem(c.post(path, json={"query": GLASS, "extra": 1}), 422)
        assert_problem(c.post(f"/v1/threads/{thread_id}/resume", json={"action": "edit"}), 422)
        assert_problem(c.post(f"/v1/threads/{thread_id}/resume", json={"action": "approve", "text": "y" * 5000}), 413)
        assert_problem(c.get("/v1/threads/unknown-thread"), 404)
        assert_problem(c.get("/v1/threads/bad%20id"), 422)
        assert_problem(c.get("/v1/nothing-here"), 404)
        assert_problem(c.delete("/v1/escalations"), 405)
    assert_problem(httpx.get(f"{url}/v1/escalations"), 401).get("detail")
    assert httpx.get(f"{url}/v1/escalations").headers["www-authenticate"].startswith("Bearer")
    assert_problem(httpx.get(f"{url}/v1/escalations", headers={"Authorization": "Bearer drk_nope_nope"}), 401)
    assert_problem(httpx.get(f"{url}/v1/escalations", headers={"Authorization": f"Bearer {revoked}"}), 401)
    with http(url, asker) as c:
        assert_problem(c.get("/v1/escalations"), 403)
        assert_problem(c.post(f"/v1/threads/{thread_id}/resume", json={"action": "approve"}), 403)
    with http(url, reviewer) as c:
        assert_problem(c.post("/v1/threads"), 403)
        assert c.get(f"/v1/threads/{thread_id}").status_code == 200


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    with running(tmp_path, rate_limit=RateLimit(rate=0.01, burst=3)) as (url, keys):
        key, _ = keys.create("northwind")
        other, _ = keys.create("northwind")
        with http(url, key) as c:
            statuses = [c.get("/v1/escalations").status_code for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
            limited = c.get("/v1/escalations")
            body = assert_problem(limited, 429)
            assert int(limited.headers["retry-after"]) >= 1 and body["retry_after"] > 0
        with http(url, other) as c:  # per key
            assert c.get("/v1/escalations").status_code == 200


def test_backend_down_is_503_and_a_bug_is_500_without_traceback(tmp_path):
    with running(tmp_path / "a", chat_model=FailingChatModel()) as (url, keys):
        key, _ = keys.create("northwind")
        with http(url, key) as c:
            thread_id = c.post("/v1/threads").json()["thread_id"]
            body = assert_problem(c.post(f"/v1/threads/{thread_id}/messages", json={"query": GLASS}), 503)
            assert "connection refused" in body["detail"]
    with running(tmp_path / "b", chat_model=FailingChatModel(error="bug")) as (url, keys):
        key, _ = keys.create("northwind")
        with http(url, key) as c:
            thread_id = c.post("/v1/threads").json()["thread_id"]
            response = c.post(f"/v1/threads/{thread_id}/messages", json={"query": GLASS})
            body = assert_problem(response, 500)
            assert body["incident"] and "secret" not in response.text and "RuntimeError" not in response.text


def test_not_ready_answers_503_with_the_failing_check(tmp_path):
    with running(tmp_path, store_down=True) as (url, keys):
        key, _ = keys.create("northwind")
        body = assert_problem(httpx.get(f"{url}/readyz", timeout=30), 503)
        assert body["checks"]["store"].startswith("error:") and body["checks"]["model"] == "ok"
        with http(url, key) as c:
            assert "store" in assert_problem(c.post("/v1/threads"), 503)["detail"]


def test_typed_client_sync_and_async(server):
    url, keys = server
    key, _ = keys.create("northwind")
    with api_client.Client(url, key, retries=0) as client:
        assert client.healthz().status == "ok" and client.readyz().ready
        thread = client.create_thread()
        result = client.ask(thread.thread_id, GLASS, claim={"line": "auto", "amount": 300, "policy_age_days": 30,
                                                             "prior_claims_12m": 0, "contacts_on_claim": 1})
        assert isinstance(result, AskResult) and result.route == "auto"
        events = list(client.ask_stream(thread.thread_id, LAWYER))
        assert events[-1].event == "done" and events[-1].data["status"] == "awaiting_human"
        assert [e.thread_id for e in client.escalations().escalations] == [thread.thread_id]
        assert client.resume(thread.thread_id, "approve", reviewer="ana").status == "answered"
        with pytest.raises(api_client.ConflictError) as conflict:
            client.resume(thread.thread_id, "approve")
        assert conflict.value.status == 409 and "not waiting" in conflict.value.problem.detail
        with pytest.raises(ThreadNotFoundError):  # a 404 is the domain error too
            client.get_thread("no-such-thread")
        with pytest.raises(InputError):  # validated before sending
            client.ask(thread.thread_id, "   ")
        with pytest.raises(InputError):
            client.resume(thread.thread_id, "edit")
    with api_client.Client(url, "drk_bad_key", retries=0) as client, pytest.raises(api_client.AuthenticationError):
        client.create_thread()

    async def run_async() -> None:
        async with api_client.AsyncClient(url, key, retries=0) as client:
            thread = await client.create_thread()
            result = await client.ask(thread.thread_id, GLASS)
            assert result.status == "answered"
            events = [e async for e in client.ask_stream(thread.thread_id, GLASS)]
            assert [e.event for e in events][:2] == ["route", "retrieval"]
            assert (await client.get_thread(thread.thread_id)).turns == 2
            with pytest.raises(api_client.NotFoundError):
                await client.resume("no-such-thread", "approve")

    asyncio.run(run_async())


def test_client_retries_429_after_retry_after_then_surfaces_it(tmp_path):
    with running(tmp_path, rate_limit=RateLimit(rate=1.0, burst=1)) as (url, keys):
        key, _ = keys.create("northwind")
        with api_client.Client(url, key, retries=1) as client:
            client.escalations()
            start = time.monotonic()
            client.escalations()  # 429, Retry-After: 1, then 200
            assert time.monotonic() - start >= 0.9
        with api_client.Client(url, key, retries=0) as client, pytest.raises(api_client.RateLimitedError) as limited:
            client.escalations()
        assert limited.value.status == 429 and limited.value.retry_after > 0


def test_client_maps_connection_failure_to_backend_unavailable():
    with socket_closed_port() as url, api_client.Client(url, "drk_x_y", retries=1, backoff_s=0.01) as client:
        with pytest.raises(BackendUnavailableError):
            client.healthz()


@contextmanager
def socket_closed_port() -> Iterator[str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


def test_keys_are_stored_hashed_and_revocable(tmp_path):
    store = KeyStore.in_dir(tmp_path)
    key, record = store.create("harbor", role="review", name="claims system")
    assert key.startswith(f"drk_{record.key_id}_")
    secret = key.split("_", 2)[2]
    assert secret.encode() not in store.path.read_bytes()
    with sqlite3.connect(store.path) as db:
        assert secret not in " ".join(str(v) for row in db.execute("SELECT * FROM api_keys") for v in row)
    assert store.verify(key) == record and record.allows("review") and not record.allows("ask")
    assert store.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.verify("drk_" + record.key_id) is None and store.verify("") is None
    store.revoke(record.key_id)
    assert store.verify(key) is None
    with pytest.raises(InputError):
        store.revoke(record.key_id)
    with pytest.raises(InputError):
        store.create("bad tenant!")
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"


def test_token_bucket_refills_at_the_rate():
    now = [100.0]
    buckets = TokenBuckets(RateLimit(rate=2.0, burst=2), clock=lambda: now[0])
    assert [buckets.take("k") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)
    assert buckets.take("other") == 0.0
    now[0] += 0.5
    assert buckets.take("k") == 0.0 and buckets.take("k") > 0
    assert TokenBuckets(RateLimit(rate=0)).take("k") == 0.0
    with pytest.raises(ValueError):
        RateLimit(rate=-1)


def test_sse_helpers_round_trip():
    for text in ["", "one", "Chip repair  is free [1].\nSecond line.", " leading and trailing "]:
        assert "".join(sse.word_chunks(text)) == text
    payload = b"".join(sse.encode(name, {"n": i, "text": "a\nb"}, i) for i, name in enumerate(["route", "done"]))
    events = list(sse.parse(payload.decode().splitlines()))
    assert [(e.event, e.data["n"], e.id) for e in events] == [("route", 0, "0"), ("done", 1, "1")]
    assert list(sse.parse([": keep-alive", "", "event: x", 'data: {"a": 1}'])) == [
        sse.StreamEvent(event="x", data={"a": 1})]


def test_resume_request_mirrors_the_graph_decision():
    assert set(ResumeRequest.model_fields) == set(HumanDecision.model_fields)
    for name, field in ResumeRequest.model_fields.items():
        assert field.annotation == HumanDecision.model_fields[name].annotation
    for bad in ({"action": "edit"}, {"action": "edit", "text": " "}, {"action": "maybe"}):
        with pytest.raises(ValueError):
            ResumeRequest.model_validate(bad)
        with pytest.raises(ValueError):
            HumanDecision.model_validate(bad)


def test_keys_and_serve_commands(tmp_path, capsys):
    from domainroute.cli import main

    assert main(["keys", "create", "harbor", "--role", "ask", "--data-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("drk_") and "only time it is shown" in err
    record = KeyStore.in_dir(tmp_path).verify(key)
    assert record is not None and (record.tenant, record.role) == ("harbor", "ask")
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert record.key_id in listed and key.split("_", 2)[2] not in listed
    assert main(["keys", "revoke", record.key_id, "--data-dir", str(tmp_path)]) == 0
    assert KeyStore.in_dir(tmp_path).verify(key) is None
    capsys.readouterr()
    for argv in (["keys", "create", "no spaces", "--data-dir", str(tmp_path)], ["keys", "create"],
                 ["serve", "--port", "0", "--data-dir", str(tmp_path)],
                 ["serve", "--rate", "-1", "--data-dir", str(tmp_path)]):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.startswith("domainroute: error:")
