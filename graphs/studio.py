"""The agent graph as LangGraph Studio serves it (``langgraph dev``; ``langgraph.json`` points at ``graph``).

The same ``build_graph`` the service compiles; only the run-time context differs. Studio and ``langgraph dev``
send a run's context as JSON (``{}`` when none is given), and langgraph builds ``context_schema(**context)``
from it, so the graph served here declares ``StudioContext``: the JSON-able knobs of ``AgentContext`` (tenant,
hybrid fusion weight, date of loss, answer length), each defaulting to ``Settings`` (``DOMAINROUTE_*``, the
config file), with the model, router, escalation policy and retriever built once per process from the same
Settings, exactly as ``AgentService`` builds them. Studio shows the context fields as an editable form.

langgraph-api supplies the checkpointer (in memory, saved under ``.langgraph_api/``), so the paused escalation,
its packet and ``Command(resume=...)`` work as in the service.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from domainroute.graphs.graph import build_graph
from domainroute.pack import load_pack
from domainroute.settings import Settings

if TYPE_CHECKING:
    from domainroute.pack import Pack
    from domainroute.service import AgentService


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings()


@lru_cache(maxsize=1)
def _service() -> AgentService:
    """The components, built once per server process from Settings (loaded on the first run, not at import)."""
    from domainroute.service import AgentService

    return AgentService(_settings())


class StudioContext(BaseModel):
    """What a Studio run may set; everything ``AgentContext`` has, with the heavy parts shared per process."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    tenant: str = Field(default_factory=lambda: _settings().tenant,
                        description="Tenant whose documents retrieval may return.")
    hybrid_alpha: float = Field(default_factory=lambda: _settings().hybrid_alpha, ge=0.0, le=1.0,
                                description="Hybrid fusion weight: 1 = vector only, 0 = keyword only.")
    as_of: date | None = Field(None, description="Date of loss: only document versions in force then (default today).")
    max_new_tokens: int = Field(default_factory=lambda: _settings().max_new_tokens, ge=1, le=2048)

    @property
    def pack(self) -> Pack:
        return _service().pack

    @property
    def chat_model(self) -> Any:
        return _service().chat_model

    @property
    def router(self) -> Any:
        return _service().router

    @property
    def retriever(self) -> Any:
        return _service().retriever

    @property
    def escalation_policy(self) -> Any:
        return _service().escalation_policy

    @property
    def adapters(self) -> frozenset[str]:
        return frozenset(_service().adapters)

    @property
    def quote_fact_free(self) -> bool:
        return _service().quote_fact_free_drafts


def make_builder():
    """The uncompiled graph for the configured pack, declaring ``StudioContext`` as its context schema."""
    builder = build_graph(pack=load_pack(_settings().pack_dir))
    builder.context_schema = StudioContext  # the only difference from the service's graph
    return builder


graph = make_builder().compile(name="domainroute")
