"""Fakes that implement the real interfaces, for unit tests only (integration tests use the real components)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from domainroute.errors import UnknownAdapterError
from domainroute.retrievers.base import Chunk, SearchFilters
from domainroute.schemas import Claim, EscalationDecision, Passage, RouteDecision


class ScriptedChatModel(BaseChatModel):
    """Replays scripted replies and records the adapter each call asked for."""

    replies: list[str]
    known_adapters: list[str] | None = None  # None: serve any adapter id (the graph checks ids itself)
    calls: list[dict[str, Any]] = []
    copy_numbers: bool = False  # like the embedded engine's flag: the graph then passes copy_from / quote_from

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, *, adapter_id=None,
                  max_new_tokens=None, **kwargs) -> ChatResult:
        if adapter_id is not None and self.known_adapters is not None and adapter_id not in self.known_adapters:
            raise UnknownAdapterError(adapter_id, self.known_adapters)
        self.calls.append({"adapter_id": adapter_id, "prompt": messages[-1].text, "kwargs": kwargs})
        text = self.replies[min(len(self.calls) - 1, len(self.replies) - 1)]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


@dataclass
class KeywordRouter:
    """Routes by the first keyword found; a fake of the Router protocol."""

    keywords: dict[str, str]

    def route(self, query: str, *, previous_route: str | None = None) -> RouteDecision:
        for word, route in self.keywords.items():
            if word in query.lower():
                return RouteDecision(route=route, confidence=0.9)
        if previous_route and previous_route != "out_of_scope":
            return RouteDecision(route=previous_route, confidence=0.6)
        return RouteDecision(route="out_of_scope", confidence=0.3)


@dataclass
class WordPolicy:
    """Escalates when a listed word occurs; a fake of the EscalationPolicy protocol."""

    words: dict[str, str]

    def decide(self, query: str, claim: Claim | None) -> EscalationDecision:
        reasons = sorted({r for w, r in self.words.items() if w in query.lower()})
        return EscalationDecision(escalate=bool(reasons), score=1.0 if reasons else 0.0, reasons=reasons)


@dataclass
class ListRetriever:
    """In-memory retriever over a list of passages: word overlap scoring, tenant and line filters."""

    passages: list[Passage]
    fail: bool = False
    queries: list[str] = field(default_factory=list)

    def upsert_document(self, chunks: list[Chunk], *, tenant: str) -> int:
        raise NotImplementedError

    def search(self, query: str, *, tenant: str, k: int, filters: SearchFilters = SearchFilters(), alpha: float = 0.5,
               mode: str = "hybrid") -> list[Passage]:
        from domainroute.errors import RetrievalUnavailableError

        if self.fail:
            raise RetrievalUnavailableError("could not retrieve policy documents: store is down")
        self.queries.append(query)
        words = set(query.lower().split())
        pool = [p for p in self.passages if p.tenant == tenant and (not filters.lines or p.line in filters.lines)]
        pool.sort(key=lambda p: -len(words & set(p.text.lower().split())))
        return pool[:k]

    def count(self, *, tenant: str) -> int:
        return sum(p.tenant == tenant for p in self.passages)

    def tenants(self) -> list[str]:
        return sorted({p.tenant for p in self.passages})

    def healthy(self) -> bool:
        return not self.fail


def passage(chunk_id: str, text: str, line: str = "auto", tenant: str = "northwind") -> Passage:
    doc_id = chunk_id.split("@")[0]
    return Passage(chunk_id=chunk_id, doc_id=doc_id, title=doc_id.replace("-", " ").title(), section="Section",
                   text=f"Section\n{text}", line=line, doc_type="policy_wording", effective_date="2025-01-01",
                   tenant=tenant)


def served_adapters(pack) -> dict[str, "Path"]:
    """The pack's adapter ids, as the adapter map of a service whose chat model is a fake (no weights loaded)."""
    from pathlib import Path

    return {r.adapter_id: Path(".") for r in pack.domain_routes if r.adapter_id}
