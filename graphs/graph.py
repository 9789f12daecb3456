"""The routed agent graph: classify -> domain node -> grounding check -> escalation check -> finish or pause."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from domainroute.graphs.context import AgentContext
from domainroute.graphs.nodes import (
    CHECK_ESCALATION,
    CLASSIFY,
    FINALIZE,
    GROUND,
    HUMAN_REVIEW,
    REFUSE,
    check_escalation,
    classify,
    domain_node_name,
    finalize,
    ground,
    human_review,
    make_domain_node,
    needs_human,
    pick_route,
    refuse,
)
from domainroute.graphs.state import AgentState
from domainroute.pack import Pack


def build_graph(*, pack: Pack) -> StateGraph:
    """Return the *uncompiled* graph for ``pack``; the caller compiles it with its own checkpointer."""
    graph = StateGraph(AgentState, context_schema=AgentContext)
    graph.add_node(CLASSIFY, classify)
    graph.add_node(REFUSE, refuse)
    graph.add_node(GROUND, ground)
    graph.add_node(CHECK_ESCALATION, check_escalation)
    graph.add_node(HUMAN_REVIEW, human_review)
    graph.add_node(FINALIZE, finalize)
    destinations = {REFUSE: REFUSE}
    for route in pack.domain_routes:
        name = domain_node_name(route.name)
        graph.add_node(name, make_domain_node(route))
        graph.add_edge(name, GROUND)
        destinations[name] = name
    graph.add_edge(START, CLASSIFY)
    graph.add_conditional_edges(CLASSIFY, pick_route, destinations)
    graph.add_edge(REFUSE, CHECK_ESCALATION)
    graph.add_edge(GROUND, CHECK_ESCALATION)
    graph.add_conditional_edges(CHECK_ESCALATION, needs_human, {HUMAN_REVIEW: HUMAN_REVIEW, FINALIZE: FINALIZE})
    graph.add_edge(HUMAN_REVIEW, END)
    graph.add_edge(FINALIZE, END)
    return graph
