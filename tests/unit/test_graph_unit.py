"""The graph with fakes of each interface: routing, citations, refusal, pause and resume, topology."""

from __future__ import annotations

from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from domainroute.errors import UnknownAdapterError
from domainroute.graphs.context import AgentContext
from domainroute.graphs.graph import build_graph
from domainroute.graphs.state import turn_input
from domainroute.pack import load_pack
from domainroute.settings import BUNDLED_PACK
from tests.fakes import KeywordRouter, ListRetriever, ScriptedChatModel, WordPolicy, passage

pytestmark = pytest.mark.unit
SNAPSHOT = Path(__file__).parent / "snapshots" / "graph.mmd"


@pytest.fixture()
def pack():
    return load_pack(BUNDLED_PACK)


def make(pack, replies, *, fail=False, adapters=None, copy_numbers=False):
    if adapters is None:
        adapters = [r.adapter_id for r in pack.domain_routes if r.adapter_id]
    model = ScriptedChatModel(replies=replies, known_adapters=list(adapters), calls=[], copy_numbers=copy_numbers)
    retriever = ListRetriever(
        [passage("auto-glass@v1#000", "Glass chip repair has a $0 deductible under comprehensive."),
         passage("auto-rental@v1#001", "Rental reimbursement pays $40 per day up to $1,200."),
         passage("home-water@v1#000", "Sudden and accidental water discharge is covered.", line="home"),
         passage("harbor-glass@v1#000", "Harbor glass chip repair costs $50.", tenant="harbor")],
        fail=fail,
    )
    ctx = AgentContext(pack=pack, chat_model=model, router=KeywordRouter({"glass": "auto", "pipe": "home", "joke": "out_of_scope"}),
                       retriever=retriever, escalation_policy=WordPolicy({"lawyer": "legal"}), adapters=frozenset(adapters))
    graph = build_graph(pack=pack).compile(checkpointer=InMemorySaver())
    return graph, ctx, model, retriever


def run(graph, ctx, query, thread="t1", claim=None):
    cfg = {"configurable": {"thread_id": thread}}
    graph.invoke(turn_input(query, claim), cfg, context=ctx)
    return graph.get_state(cfg)


def test_domain_answer_cites_only_retrieved_passages(pack):
    graph, ctx, model, retriever = make(pack, ["Chip repair is free [1], see also [7].\nSources: [1], [7]"])
    state = run(graph, ctx, "is glass chip repair covered?").values
    assert state["route"] == "auto" and state["status"] == "answered"
    assert [c["chunk_id"] for c in state["citations"]] == ["auto-glass@v1#000"]
    assert state["answer"] == "Chip repair is free [1], see also."
    assert all(p["tenant"] == "northwind" and p["line"] in ("auto", "general") for p in state["passages"])
    assert model.calls[0]["adapter_id"] == pack.route("auto").adapter_id
    assert "Glass chip repair has a $0 deductible" in model.calls[0]["prompt"]


def test_copy_mode_passes_the_passages_and_the_routes_quotable_sentences(pack):
    graph, ctx, model, _ = make(pack, ["Coverage: comprehensive\n1. Glass chip repair has a $0 deductible under "
                                       "comprehensive. [1]\nSources: [1]"], copy_numbers=True)
    run(graph, ctx, "is glass chip repair covered?")
    kwargs = model.calls[0]["kwargs"]
    assert kwargs["quote_labels"] == ["1."]  # the auto house format's quoted line
    assert (1, "Glass chip repair has a $0 deductible under comprehensive.") in kwargs["quote_from"]
    assert {n for n, _ in kwargs["quote_from"]} == set(range(1, len(kwargs["copy_from"]) + 1))
    graph, ctx, model, _ = make(pack, ["Chip repair is free [1].\nSources: [1]"])
    run(graph, ctx, "is glass chip repair covered?")
    assert model.calls[0]["kwargs"] == {}  # copy mode off (TGI, or the default): nothing extra is sent


def test_copy_mode_quotes_only_for_an_adapter_with_a_house_format(pack):
    routes = [r.model_copy(update={"adapter_id": None}) if r.name == "auto" else r for r in pack.routes]
    graph, ctx, model, _ = make(pack.model_copy(update={"routes": routes}), ["Chip repair is free [1].\nSources: [1]"],
                                copy_numbers=True)
    run(graph, ctx, "is glass chip repair covered?")
    assert set(model.calls[0]["kwargs"]) == {"copy_from"}  # the base model on route "auto": no quoted line


def test_copy_mode_regeneration_gets_the_same_constraints(pack):
    graph, ctx, model, _ = make(pack, ["Coverage: comprehensive\n1. Chip repair costs $999. [1]\nSources: [1]",
                                       "Coverage: comprehensive\n1. Glass chip repair has a $0 deductible under "
                                       "comprehensive. [1]\nSources: [1]"], copy_numbers=True)
    state = run(graph, ctx, "is glass chip repair covered?").values
    assert len(model.calls) == 2 and state["grounding"]["action"] == "regenerated"  # $999 is in no passage
    first, second = (call["kwargs"] for call in model.calls)
    assert second["quote_labels"] == ["1."] and second["copy_from"] == first["copy_from"]
    assert second["quote_from"] == first["quote_from"]


def test_out_of_scope_is_refused_without_a_model_call(pack):
    graph, ctx, model, _ = make(pack, ["never used"])
    state = run(graph, ctx, "tell me a joke").values
    assert state["status"] == "refused" and state["answer"] == pack.refusal
    assert model.calls == []


def test_escalation_pauses_and_each_decision_resumes(pack):
    for action, text, expected in [("approve", None, "Draft [1]."), ("edit", "We will call you.", "We will call you."),
                                   ("reject", None, "A claims specialist has taken over")]:
        graph, ctx, model, _ = make(pack, ["Draft [1]."])
        snap = run(graph, ctx, "my lawyer says the glass claim is wrong", thread=action)
        assert snap.values["status"] == "awaiting_human"
        packet = snap.tasks[0].interrupts[0].value
        assert packet["reasons"] == ["legal"] and packet["draft"] == "Draft [1]."
        cfg = {"configurable": {"thread_id": action}}
        graph.invoke(Command(resume={"action": action, "text": text}), cfg, context=ctx)
        final = graph.get_state(cfg)
        assert not final.next and final.values["status"] == "answered"
        assert final.values["answer"].startswith(expected)


def test_retrieval_failure_escalates_instead_of_answering(pack):
    graph, ctx, model, _ = make(pack, ["unused"], fail=True)
    snap = run(graph, ctx, "is glass covered")
    assert snap.values["status"] == "awaiting_human"
    assert "retrieval_unavailable" in snap.values["escalation"]["reasons"]
    assert model.calls == []


def test_follow_up_keeps_the_thread_route(pack):
    graph, ctx, _, _ = make(pack, ["Answer [1]."])
    run(graph, ctx, "windshield glass cracked")
    assert run(graph, ctx, "and what about the deductible?").values["route"] == "auto"


def test_unknown_adapter_is_an_error(pack):
    route = pack.route("auto").model_copy(update={"adapter_id": "insurance-auto"})
    other = pack.model_copy(update={"routes": [route if r.name == "auto" else r for r in pack.routes]})
    graph, ctx, _, _ = make(other, ["x"], adapters=())
    with pytest.raises(UnknownAdapterError, match="insurance-auto"):
        run(graph, ctx, "glass")


def test_topology_snapshot(pack):
    drawn = build_graph(pack=pack).compile().get_graph().draw_mermaid()
    if not SNAPSHOT.exists():  # first run writes the snapshot; commit it
        SNAPSHOT.write_text(drawn)
    assert drawn == SNAPSHOT.read_text(), "graph topology changed: review and delete the snapshot to accept"
