"""Run-time context: what a run is configured with. Read by nodes through ``Runtime[AgentContext]``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from langchain_core.language_models import BaseChatModel

from domainroute.agents.interfaces import EscalationPolicy, Router
from domainroute.pack import Pack
from domainroute.retrievers.base import Retriever


@dataclass(frozen=True)
class AgentContext:
    pack: Pack
    chat_model: BaseChatModel
    router: Router
    retriever: Retriever
    escalation_policy: EscalationPolicy
    adapters: frozenset[str]  # adapter ids the chat model serves; a route naming another one is refused
    tenant: str = "northwind"
    hybrid_alpha: float = 0.5
    as_of: date | None = None  # date of loss for document versions; None = today
    max_new_tokens: int = 160
    quote_fact_free: bool = False  # a draft with no checkable fact is quoted over (Settings.fact_free_drafts)
