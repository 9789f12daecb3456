"""Graph state: what one conversation carries from node to node and across turns (checkpointed).

Plain JSON-able values only, so SQLite checkpoints stay readable by any process.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict  # pydantic (Studio's input/output schemas) needs it on Python < 3.12

Status = Literal["answered", "awaiting_human", "refused"]


class AgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    query: str
    claim: dict[str, Any] | None
    route: str
    confidence: float
    adapter: str | None
    passages: list[dict[str, Any]]  # Passage dumps retrieved this turn
    retrieval_error: str | None
    draft: str  # the model's answer before any human decision
    answer: str  # what the customer is shown
    citations: list[dict[str, str]]  # {"doc_id", "chunk_id", "title"}; always a subset of passages
    citations_removed: int  # [n] markers in the model's drafts that pointed at no passage of this turn
    grounding: dict[str, Any] | None  # the grounding record (nodes.ground); None when no domain node ran
    escalation: dict[str, Any] | None  # EscalationDecision dump
    decision: dict[str, Any] | None  # the human's decision, after a pause
    status: Status


def turn_input(query: str, claim: dict[str, Any] | None) -> dict[str, Any]:
    """The state update that starts a new turn: per-turn fields are reset, the thread's route is kept."""
    from langchain_core.messages import HumanMessage

    return {
        "messages": [HumanMessage(content=query)],
        "query": query,
        "claim": claim,
        "passages": [],
        "retrieval_error": None,
        "draft": "",
        "answer": "",
        "citations": [],
        "citations_removed": 0,
        "grounding": None,
        "escalation": None,
        "decision": None,
    }
