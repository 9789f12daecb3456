"""The graph LangGraph Studio serves: the service's graph, with a JSON-able context defaulting to Settings."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import date

import pytest

from domainroute.graphs import studio
from domainroute.graphs.context import AgentContext
from domainroute.graphs.graph import build_graph
from domainroute.pack import load_pack
from domainroute.settings import BUNDLED_PACK

pytestmark = pytest.mark.unit


def test_studio_graph_is_the_service_graph():
    service_graph = build_graph(pack=load_pack(BUNDLED_PACK)).compile()
    assert studio.graph.get_graph().draw_mermaid() == service_graph.get_graph().draw_mermaid()
    assert studio.graph.context_schema is studio.StudioContext


def test_studio_context_offers_everything_nodes_read_from_agent_context():
    for f in dataclasses.fields(AgentContext):
        assert inspect.getattr_static(studio.StudioContext, f.name, None) is not None or \
            f.name in studio.StudioContext.model_fields, f.name


def test_context_defaults_come_from_settings_and_json_is_coerced(monkeypatch):
    monkeypatch.setenv("DOMAINROUTE_TENANT", "harbor")
    monkeypatch.setenv("DOMAINROUTE_HYBRID_ALPHA", "0.25")
    studio._settings.cache_clear()
    try:
        ctx = studio.StudioContext(**{})  # what langgraph builds when a run sends no context
        assert (ctx.tenant, ctx.hybrid_alpha, ctx.as_of) == ("harbor", 0.25, None)
        given = studio.StudioContext(**{"tenant": "northwind", "as_of": "2025-06-01", "thread_id": "ignored"})
        assert given.tenant == "northwind" and given.as_of == date(2025, 6, 1)
        with pytest.raises(ValueError):
            studio.StudioContext(hybrid_alpha=2)
    finally:
        studio._settings.cache_clear()
    schema = studio.graph.get_context_jsonschema()
    assert set(schema["properties"]) == {"tenant", "hybrid_alpha", "as_of", "max_new_tokens"}
