"""`langgraph dev` serves langgraph.json's graph; the SDK runs an escalating case, sees the interrupt, resumes it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.schema import Command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
LEGAL = "my lawyer says you unfairly denied my claim for the cracked windshield on my car"
CLAIM = {"line": "auto", "amount": 8000, "policy_age_days": 400, "prior_claims_12m": 0, "contacts_on_claim": 2}


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 2024:  # taken on these machines, and langgraph dev's default
            return port


def tail(workdir: Path) -> str:
    return (workdir / "server.log").read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def studio_server(data_dir, tmp_path_factory) -> Iterator[str]:
    """`langgraph dev` on 127.0.0.1, run from a scratch folder (its .langgraph_api/ lands there), stopped after."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("langgraph-dev")
    env = {**os.environ, "LANGGRAPH_NO_VERSION_CHECK": "1", "LANGSMITH_TRACING": "false", "HF_HUB_OFFLINE": "1",
           "DOMAINROUTE_DATA_DIR": str(data_dir)}
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("langgraph")), "dev", "--host", "127.0.0.1", "--port", str(port),
         "--no-browser", "--no-reload", "--config", str(ROOT / "langgraph.json")],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"langgraph dev exited with {process.returncode}:\n{tail(workdir)}")
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev did not answer /ok in 120 s:\n{tail(workdir)}")
            time.sleep(0.5)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        log.close()


def test_sdk_runs_an_escalating_case_sees_the_interrupt_and_resumes_it(studio_server):
    with get_sync_client(url=studio_server, timeout=httpx.Timeout(300.0)) as client:
        assistants = client.assistants.search(graph_id="domainroute")
        assert [a["graph_id"] for a in assistants] == ["domainroute"]
        schemas = client.assistants.get_schemas(assistants[0]["assistant_id"])
        assert set(schemas["context_schema"]["properties"]) == {"tenant", "hybrid_alpha", "as_of", "max_new_tokens"}
        assert {"route", "passages", "escalation"} <= set(schemas["state_schema"]["properties"])
        nodes = {n["id"] for n in client.assistants.get_graph(assistants[0]["assistant_id"])["nodes"]}
        assert {"classify", "domain_auto", "check_escalation", "human_review"} <= nodes

        thread = client.threads.create()
        turn = {"query": LEGAL, "claim": CLAIM, "messages": [{"role": "user", "content": LEGAL}]}
        values = client.runs.wait(thread["thread_id"], "domainroute", input=turn)
        assert values["status"] == "awaiting_human" and "legal" in values["escalation"]["reasons"]
        # no context given: the tenant defaults to Settings (northwind)
        assert values["passages"] and {p["tenant"] for p in values["passages"]} == {"northwind"}

        state = client.threads.get_state(thread["thread_id"])
        assert state["next"] == ["human_review"]
        interrupts = [item for task in state["tasks"] for item in task["interrupts"]]
        assert len(interrupts) == 1 and "legal" in interrupts[0]["value"]["reasons"]
        assert interrupts[0]["value"]["route"] == values["route"] and interrupts[0]["value"]["claim"] == CLAIM

        decision = {"action": "edit", "text": "A specialist will call you today."}
        final = client.runs.wait(thread["thread_id"], "domainroute", command=Command(resume=decision))
        assert (final["status"], final["answer"]) == ("answered", "A specialist will call you today.")
        assert client.threads.get_state(thread["thread_id"])["next"] == []


def test_context_from_the_run_scopes_retrieval(studio_server):
    query = "is a windshield chip repair covered, and what is the deductible?"
    with get_sync_client(url=studio_server, timeout=httpx.Timeout(300.0)) as client:
        thread = client.threads.create()
        turn = {"query": query, "claim": None, "messages": [{"role": "user", "content": query}]}
        values = client.runs.wait(thread["thread_id"], "domainroute", context={"tenant": "harbor"}, input=turn)
    assert values["passages"] and {p["tenant"] for p in values["passages"]} == {"harbor"}
