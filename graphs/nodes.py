"""The graph's nodes: small typed functions returning partial state updates.

Domain nodes are generated from the route configuration by ``make_domain_node``; nothing here is written once
per domain.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Literal

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, model_validator

from domainroute.errors import RetrievalUnavailableError, UnknownAdapterError
from domainroute.graphs import grounding, prompts
from domainroute.graphs.citations import attach_citations
from domainroute.graphs.context import AgentContext
from domainroute.graphs.redaction import redact
from domainroute.graphs.state import AgentState
from domainroute.pack import OUT_OF_SCOPE, RouteConfig
from domainroute.retrievers.base import SearchFilters
from domainroute.schemas import Claim, EscalationDecision, Passage
from domainroute.tools.retrieval import TOOL_NAME, search_policy_documents

CLASSIFY = "classify"
REFUSE = "refuse"
GROUND = "ground"
CHECK_ESCALATION = "check_escalation"
HUMAN_REVIEW = "human_review"
FINALIZE = "finalize"
RETRIEVAL_UNAVAILABLE = "retrieval_unavailable"
UNGROUNDED = "ungrounded"
TAKEOVER_MESSAGE = "A claims specialist has taken over your case and will contact you directly."


def domain_node_name(route: str) -> str:
    return f"domain_{route}"


class HumanDecision(BaseModel):
    """What a human sends to resume a paused thread."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "edit", "reject"]
    text: str | None = None
    reviewer: str | None = None

    @model_validator(mode="after")
    def _text_for_edit(self) -> "HumanDecision":
        if self.action == "edit" and not (self.text and self.text.strip()):
            raise ValueError("an 'edit' decision needs the edited answer text (--text)")
        return self


def classify(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    decision = ctx.router.route(state["query"], previous_route=state.get("route"))
    route = ctx.pack.route(decision.route)
    return {"route": route.name, "confidence": decision.confidence, "adapter": route.adapter_id}


def pick_route(state: AgentState) -> str:
    return REFUSE if state["route"] == OUT_OF_SCOPE else domain_node_name(state["route"])


def refuse(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    text = prompts.refusal(runtime.context.pack.refusal)
    return {"draft": text, "adapter": None, "passages": [], "citations": []}


def _retrieve(query: str, route: RouteConfig, ctx: AgentContext) -> list[dict[str, Any]]:
    call = {
        "type": "tool_call",
        "id": f"call_{uuid.uuid4().hex[:12]}",
        "name": TOOL_NAME,
        "args": {
            "query": query,
            "retriever": ctx.retriever,
            "tenant": ctx.tenant,
            "filters": SearchFilters(lines=tuple(route.retrieval.lines), doc_types=tuple(route.retrieval.doc_types),
                                     as_of=ctx.as_of),
            "k": route.retrieval.top_k,
            "alpha": ctx.hybrid_alpha,
        },
    }
    return list(search_policy_documents.invoke(call).artifact)


def make_domain_node(route: RouteConfig) -> Callable[[AgentState, Runtime[AgentContext]], dict[str, Any]]:
    """A node that retrieves within the route's scope, then calls the chat model with the route's adapter."""

    def domain_node(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
        ctx = runtime.context
        if route.adapter_id is not None and route.adapter_id not in ctx.adapters:
            raise UnknownAdapterError(route.adapter_id, list(ctx.adapters))
        try:
            passages = _retrieve(state["query"], route, ctx)
        except RetrievalUnavailableError as exc:
            return {"passages": [], "retrieval_error": str(exc), "draft": ""}
        shown = [Passage(**p) for p in passages]
        messages = [SystemMessage(prompts.SYSTEM_PROMPT), HumanMessage(prompts.user_prompt(state["query"], shown))]
        model = ctx.chat_model.bind(adapter_id=route.adapter_id, max_new_tokens=ctx.max_new_tokens,
                                    **_copy_from(ctx, shown, state["query"], route.adapter_id))
        reply = model.invoke(messages)
        cited = attach_citations(reply.text, passages)
        return {"passages": passages, "draft": cited.text, "citations": cited.citations,
                "citations_removed": cited.dropped}

    domain_node.__name__ = domain_node_name(route.name)
    return domain_node


def ground(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Check the draft's facts against the passages it cites; retry once, else quote the passages, else escalate.

    A draft passes when every fact is supported and, if the question clearly asks for a figure ("how much...?"),
    it states a supported fact of that kind; with ``quote_fact_free`` (the embedded engine's default) a draft that
    states no checkable fact at all is quoted over at once. Nothing unsupported is shown: a draft that fails is
    moved to ``grounding.withheld`` (for the human's packet) and replaced. ``checked``/``supported`` describe the
    model's first draft; ``removed`` counts citation markers that pointed at no passage of this turn, over every
    draft.
    """
    if state.get("retrieval_error"):  # nothing to check; check_escalation hands the turn to a human
        return {"grounding": {"checked": 0, "supported": 0, "removed": 0, "action": "none", "unsupported": [],
                              "withheld": [], "steps": [{"step": "skip", "reason": "retrieval_unavailable"}]}}
    passages, draft, query = state.get("passages", []), state.get("draft", ""), state["query"]
    first = grounding.check_answer(draft, state.get("citations", []), passages)
    record: dict[str, Any] = {"checked": first.checked, "supported": first.supported,
                              "removed": state.get("citations_removed", 0), "action": "none",
                              "unsupported": [f.text for f in first.unsupported], "withheld": [],
                              "steps": [_step("check", first, query)]}
    if passages and draft.strip() and _fact_free(runtime.context, first):
        record["withheld"].append(_withheld(draft, state.get("citations", []), first))
        return _quote_or_escalate(state, passages, record, query)  # nothing to check: no retry, quote the passages
    if _passes(draft, state.get("citations", []), passages, first, query):
        return {"grounding": record}
    record["withheld"].append(_withheld(draft, state.get("citations", []), first))
    retry, dropped = _regenerate(state, runtime.context, record["unsupported"], record["steps"][0]["missing"])
    record["removed"] += dropped
    second = grounding.check_answer(retry.text, retry.citations, passages)
    record["steps"].append(_step("regenerate", second, query))
    if _passes(retry.text, retry.citations, passages, second, query) and not _fact_free(runtime.context, second):
        return {"grounding": {**record, "action": "regenerated"}, "draft": retry.text, "citations": retry.citations}
    record["withheld"].append(_withheld(retry.text, retry.citations, second))
    record["unsupported"] += [f.text for f in second.unsupported if f.text not in record["unsupported"]]
    return _quote_or_escalate(state, passages, record, query)


def _fact_free(ctx: AgentContext, check: grounding.Check) -> bool:
    """A draft with no checkable fact that this run does not show as written (``Settings.fact_free_drafts``)."""
    return ctx.quote_fact_free and not check.checked


def _quote_or_escalate(state: AgentState, passages: list[dict[str, Any]], record: dict[str, Any],
                       query: str) -> dict[str, Any]:
    quoted = grounding.extractive_answer(state["query"], passages)
    if quoted is None:
        record["steps"].append({"step": "escalate", "reason": UNGROUNDED})
        return {"grounding": {**record, "action": "escalated"}, "draft": "", "citations": []}
    text, citations = quoted
    record["steps"].append(_step("extractive", grounding.check_answer(text, citations, passages), query))
    return {"grounding": {**record, "action": "extractive"}, "draft": text, "citations": citations}


def _passes(text: str, citations: list[dict[str, str]], passages: list[dict[str, Any]], check: grounding.Check,
            query: str) -> bool:
    """Shown as written only if non-empty, every fact is supported, it answers the asked-for kind, and it cites
    a passage whenever passages were retrieved (an empty or uncited draft has nothing to check, not nothing wrong)."""
    if not text.strip() or (passages and not citations):
        return False
    return check.ok and grounding.answers(query, check)


def _copy_from(ctx: AgentContext, shown: list[Passage], query: str, adapter_id: str | None) -> dict[str, Any]:
    """``copy_from`` for chat models that constrain generated numbers to the passages' (the embedded engine), and
    ``quote_from``/``quote_labels`` when the adapter's house format has a quoted line (its sentence must then be one
    the prompt shows); other backends (TGI) do not take them, and the grounding check covers them."""
    if not (shown and getattr(ctx.chat_model, "copy_numbers", False)):
        return {}
    from domainroute.adapters.dataset import quotable
    from domainroute.adapters.templates import adapter_house_format

    out: dict[str, Any] = {"copy_from": [p.text for p in shown]}
    house = adapter_house_format(adapter_id)
    if house is not None and house.quote_labels:
        out |= {"quote_from": quotable(query, shown), "quote_labels": list(house.quote_labels)}
    return out


def _regenerate(state: AgentState, ctx: AgentContext, unsupported: list[str], missing: list[str]):
    """One more model call, same adapter and passages, with the unsupported facts (or the missing figure) named."""
    shown = [Passage(**p) for p in state.get("passages", [])]
    messages = [SystemMessage(prompts.SYSTEM_PROMPT),
                HumanMessage(prompts.regeneration_prompt(state["query"], shown, unsupported, missing))]
    model = ctx.chat_model.bind(adapter_id=state.get("adapter"), max_new_tokens=ctx.max_new_tokens,
                                **_copy_from(ctx, shown, state["query"], state.get("adapter")))
    cited = attach_citations(model.invoke(messages).text, state.get("passages", []))
    return cited, cited.dropped


def _step(name: str, check: grounding.Check, query: str) -> dict[str, Any]:
    missing = [] if grounding.answers(query, check) else sorted(
        grounding.KIND_NAMES[k] for k in grounding.asked_kinds(query))
    return {"step": name, "checked": check.checked, "supported": check.supported,
            "unsupported": [f.text for f in check.unsupported], "missing": missing}


def _withheld(text: str, citations: list[dict[str, str]], check: grounding.Check) -> dict[str, Any]:
    return {"text": text, "citations": citations, "unsupported": [f.text for f in check.unsupported]}


def check_escalation(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    claim = Claim(**state["claim"]) if state.get("claim") else None
    decision = runtime.context.escalation_policy.decide(state["query"], claim)
    if state.get("retrieval_error"):
        reasons = sorted(set(decision.reasons) | {RETRIEVAL_UNAVAILABLE})
        decision = EscalationDecision(escalate=True, score=1.0, reasons=reasons)
    if (state.get("grounding") or {}).get("action") == "escalated":
        reasons = sorted(set(decision.reasons) | {UNGROUNDED})
        decision = EscalationDecision(escalate=True, score=1.0, reasons=reasons)
    update: dict[str, Any] = {"escalation": decision.model_dump()}
    if decision.escalate:
        update.update(status="awaiting_human", answer=prompts.awaiting_human_message())
    return update


def needs_human(state: AgentState) -> str:
    escalation = state.get("escalation") or {}
    return HUMAN_REVIEW if escalation.get("escalate") else FINALIZE


def escalation_packet(state: AgentState) -> dict[str, Any]:
    """What the human sees: redacted; route, claim, reasons, a short summary, citations and the draft."""
    turns = [m for m in state.get("messages", []) if m.type in ("human", "ai")][-6:]
    summary = " | ".join(f"{'customer' if m.type == 'human' else 'agent'}: {redact(m.text)[:200]}" for m in turns)
    reasons = list((state.get("escalation") or {}).get("reasons", []))
    if state.get("retrieval_error"):
        summary += f" | note: {prompts.retrieval_failed_reason()}"
    record = state.get("grounding") or {}
    if record.get("action") == "escalated":
        summary += f" | note: {prompts.ungrounded_reason()}"
    return {
        "route": state.get("route"),
        "claim": state.get("claim"),
        "reasons": reasons,
        "score": (state.get("escalation") or {}).get("score"),
        "query": redact(state["query"]),
        "summary": summary,
        "citations": state.get("citations", []),
        "draft": redact(state.get("draft", "")),
        "grounding": _grounding_for_human(record) if record else None,
    }


def _grounding_for_human(record: dict[str, Any]) -> dict[str, Any]:
    """What the grounding check removed: the unsupported facts and the withheld drafts (redacted)."""
    return {
        **{k: record.get(k) for k in ("checked", "supported", "removed", "action", "unsupported")},
        "withheld": [{**w, "text": redact(w["text"])} for w in record.get("withheld", [])],
    }


def human_review(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    decision = HumanDecision.model_validate(interrupt(escalation_packet(state)))
    if decision.action == "approve":
        answer, citations = state.get("draft") or TAKEOVER_MESSAGE, state.get("citations", [])
    elif decision.action == "edit":
        answer, citations = (decision.text or "").strip(), []
    else:
        answer, citations = (decision.text or "").strip() or TAKEOVER_MESSAGE, []
    return {
        "decision": decision.model_dump(),
        "answer": answer,
        "citations": citations,
        "status": "answered",
        "messages": [AIMessage(content=answer, name="human" if decision.action != "approve" else None)],
    }


def finalize(state: AgentState) -> dict[str, Any]:
    refused = state["route"] == OUT_OF_SCOPE
    answer = state.get("draft", "")
    return {"answer": answer, "status": "refused" if refused else "answered", "messages": [AIMessage(content=answer)]}
