"""The agent as a service: builds every component from Settings once, runs turns, resumes paused threads.

The CLI, the claims API and the Slack bot all drive this one object; the graph itself comes from
``domainroute.graphs.graph.build_graph``.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from functools import cached_property
from pathlib import Path
from typing import Any

from langgraph.types import Command

from domainroute.errors import ConfigError, InputError, NotPausedError, ThreadNotFoundError
from domainroute.graphs.context import AgentContext
from domainroute.graphs.graph import build_graph
from domainroute.graphs.nodes import HumanDecision
from domainroute.graphs.state import turn_input
from domainroute.pack import Pack, load_pack
from domainroute.schemas import AskResult, Citation, Claim, EscalationDecision, GroundingSummary, Query, RouteDecision
from domainroute.settings import Settings


def _thread_id(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 128 or not all(c.isalnum() or c in "-_.:" for c in value):
        raise InputError(f"invalid thread id {value!r}: use letters, digits, '-', '_', '.', ':' (max 128)")
    return value


class AgentService:
    """One process's agent. Components may be injected (tests); otherwise they are built from settings."""

    def __init__(self, settings: Settings | None = None, **components: Any):
        self.settings = settings or Settings()
        self._components = components
        self._lock = threading.Lock()

    # ---- components -------------------------------------------------------------------------------------
    @cached_property
    def pack(self) -> Pack:
        return self._components.get("pack") or load_pack(self.settings.pack_dir)

    @cached_property
    def adapters(self) -> dict[str, Path]:
        if "adapters" in self._components:
            return dict(self._components["adapters"])
        from domainroute.adapters.registry import scan

        return {a: e.path for a, e in scan(self.settings.adapters_dir).items()}

    @cached_property
    def chat_model(self):
        if "chat_model" in self._components:
            return self._components["chat_model"]
        for route in self.pack.domain_routes:
            if route.adapter_id and route.adapter_id not in self.adapters:
                known = ", ".join(sorted(self.adapters)) or "none"
                raise ConfigError(
                    f"route {route.name!r} names adapter {route.adapter_id!r}, which is not in the registry at "
                    f"{self.settings.adapters_dir} (known: {known}); train it with "
                    f"`domainroute adapters train {route.name}` or remove adapter_id from pack.toml"
                )
        if self.settings.llm_backend == "tgi":
            from domainroute.agents.tgi import TGIChatModel

            if not self.settings.tgi_url:
                raise ConfigError("llm_backend is 'tgi' but no tgi_url is set (DOMAINROUTE_TGI_URL)")
            return TGIChatModel(base_url=self.settings.tgi_url, adapters=sorted(self.adapters),
                                tokenizer_path=self.settings.base_model_path,
                                max_new_tokens=self.settings.max_new_tokens)
        from domainroute.agents.local_engine import LocalChatModel

        if self.adapters and "adapters" not in self._components:
            from domainroute.adapters.registry import base_weights_sha256, check_base, scan

            if (self.settings.base_model_path / "config.json").exists():  # else LocalChatModel explains on load
                check_base(scan(self.settings.adapters_dir), base_weights_sha256(self.settings.base_model_path))
        return LocalChatModel(model_path=self.settings.base_model_path, adapters=self.adapters,
                              max_new_tokens=self.settings.max_new_tokens, torch_threads=self.settings.torch_threads,
                              copy_numbers=self.settings.copy_numbers)

    @cached_property
    def router(self):
        if "router" in self._components:
            return self._components["router"]
        from domainroute.agents.router import load_router

        return load_router(self.settings.router_dir, self.pack)

    @cached_property
    def escalation_policy(self):
        if "escalation_policy" in self._components:
            return self._components["escalation_policy"]
        from domainroute.agents.escalation import load_escalation_policy

        return load_escalation_policy(self.settings.escalation_dir, self.pack)

    @cached_property
    def retriever(self):
        if "retriever" in self._components:
            return self._components["retriever"]
        from domainroute.retrievers import configured_retriever

        retriever = configured_retriever(self.settings)
        if retriever.count(tenant=self.settings.tenant) == 0:
            raise ConfigError(
                f"the knowledge base for tenant {self.settings.tenant!r} is empty in "
                f"{self.settings.store_path if self.settings.retriever_backend == 'lancedb' else self.settings.weaviate_url}; "
                "load it first with `domainroute ingest`"
            )
        return retriever

    @property
    def quote_fact_free_drafts(self) -> bool:
        """``Settings.fact_free_drafts`` resolved: ``auto`` quotes over fact-free drafts of the embedded engine only."""
        choice = self.settings.fact_free_drafts
        if choice != "auto":
            return choice == "quote"
        from domainroute.agents.local_engine import LocalChatModel

        return isinstance(self.chat_model, LocalChatModel)

    @cached_property
    def context(self) -> AgentContext:
        return AgentContext(
            pack=self.pack, chat_model=self.chat_model, router=self.router, retriever=self.retriever,
            escalation_policy=self.escalation_policy, adapters=frozenset(self.adapters), tenant=self.settings.tenant,
            hybrid_alpha=self.settings.hybrid_alpha, max_new_tokens=self.settings.max_new_tokens,
            quote_fact_free=self.quote_fact_free_drafts,
        )

    @cached_property
    def checkpointer(self):
        if "checkpointer" in self._components:  # shared by the claims API's per-tenant services
            return self._components["checkpointer"]
        from langgraph.checkpoint.sqlite import SqliteSaver

        path = self.settings.checkpoint_path
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteSaver(sqlite3.connect(str(path), check_same_thread=False))

    @cached_property
    def graph(self):
        return build_graph(pack=self.pack).compile(checkpointer=self.checkpointer)

    # ---- turns ------------------------------------------------------------------------------------------
    def _config(self, thread_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id}}

    def _thread_exists(self, thread_id: str) -> bool:
        if "checkpointer" not in self.__dict__ and not self.settings.checkpoint_path.exists():
            return False
        return self.graph.get_state(self._config(thread_id)).created_at is not None

    def is_paused(self, thread_id: str) -> bool:
        snapshot = self.graph.get_state(self._config(thread_id))
        return any(task.interrupts for task in snapshot.tasks)

    def ask(self, query: str, claim: dict[str, Any] | Claim | None = None, thread_id: str | None = None, *,
            create: bool = False) -> AskResult:
        """One turn. ``create``: start the conversation under ``thread_id`` if it has none yet (the claims API
        hands out thread ids before the first message)."""
        try:
            parsed = Query(query=query, claim=claim)
        except ValueError as exc:
            raise InputError(_first_error(exc)) from exc
        if thread_id is not None:
            thread_id = _thread_id(thread_id)
            if not self._thread_exists(thread_id):
                if not create:
                    raise ThreadNotFoundError(f"no conversation with thread id {thread_id!r}; omit --thread to start one")
            elif self.is_paused(thread_id):
                raise InputError(
                    f"thread {thread_id!r} is waiting for a human decision; resume it first: "
                    f"domainroute resume {thread_id} --decision approve|edit|reject"
                )
        thread_id = thread_id or uuid.uuid4().hex
        claim_dict = parsed.claim.model_dump() if parsed.claim else None
        with self._lock:
            self.graph.invoke(turn_input(parsed.query, claim_dict), self._config(thread_id), context=self.context)
        return self.result(thread_id)

    def resume(self, thread_id: str, decision: dict[str, Any] | HumanDecision) -> AskResult:
        thread_id = _thread_id(thread_id)
        try:
            parsed = decision if isinstance(decision, HumanDecision) else HumanDecision.model_validate(decision)
        except ValueError as exc:
            raise InputError(_first_error(exc)) from exc
        if not self._thread_exists(thread_id):
            raise ThreadNotFoundError(f"no conversation with thread id {thread_id!r}")
        if not self.is_paused(thread_id):
            raise NotPausedError(f"thread {thread_id!r} is not waiting for a human decision; nothing to resume")
        with self._lock:
            self.graph.invoke(Command(resume=parsed.model_dump()), self._config(thread_id), context=self.context)
        return self.result(thread_id)

    def result(self, thread_id: str) -> AskResult:
        snapshot = self.graph.get_state(self._config(thread_id))
        values = snapshot.values
        paused = any(task.interrupts for task in snapshot.tasks)
        escalation = values.get("escalation")
        grounding = values.get("grounding")
        return AskResult(
            thread_id=thread_id,
            status="awaiting_human" if paused else values.get("status", "answered"),
            route=values.get("route", ""),
            confidence=round(float(values.get("confidence", 0.0)), 4),
            adapter=values.get("adapter"),
            answer=values.get("answer", ""),
            citations=[Citation(**c) for c in values.get("citations", [])],
            escalation=EscalationDecision(**escalation) if escalation else None,
            grounding=GroundingSummary(**{k: grounding[k] for k in ("checked", "supported", "removed", "action")})
            if grounding else None,
        )

    def paused_threads(self) -> list[dict[str, Any]]:
        """Threads waiting for a human, newest first, with their (redacted) escalation packets."""
        if not self.settings.checkpoint_path.exists():
            return []
        # Read the thread ids first: SqliteSaver.list holds the saver's (non-reentrant) lock while it yields, so
        # calling get_state inside that loop deadlocks as soon as one checkpoint exists.
        thread_ids = list(dict.fromkeys(c.config["configurable"]["thread_id"] for c in self.checkpointer.list(None)))
        paused = []
        for thread_id in thread_ids:
            snapshot = self.graph.get_state(self._config(thread_id))
            for task in snapshot.tasks:
                for item in task.interrupts:
                    paused.append({"thread_id": thread_id, "created_at": snapshot.created_at, "packet": item.value})
        return paused

    # ---- the evaluation contracts -----------------------------------------------------------------------
    def route_query(self, query: str) -> RouteDecision:
        from domainroute.schemas import validate_query

        try:
            text = validate_query(query)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        return self.router.route(text)

    def escalation_decision(self, query: str, claim: dict[str, Any] | None) -> EscalationDecision:
        try:
            parsed = Query(query=query, claim=claim)
        except ValueError as exc:
            raise InputError(_first_error(exc)) from exc
        return self.escalation_policy.decide(parsed.query, parsed.claim)


def _first_error(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        return f"{where}: {msg}" if where else msg
    return str(exc)
