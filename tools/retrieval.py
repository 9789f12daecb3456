"""The retrieval tool the domain nodes (or a tool-calling model) use to look up policy documents."""

from __future__ import annotations

from typing import Annotated, Any

from langchain_core.tools import InjectedToolArg, tool

from domainroute.graphs.prompts import render_passages
from domainroute.retrievers.base import Retriever, SearchFilters
from domainroute.schemas import Passage

TOOL_NAME = "search_policy_documents"
MAX_K = 8


@tool(TOOL_NAME, response_format="content_and_artifact")
def search_policy_documents(
    query: str,
    retriever: Annotated[Retriever, InjectedToolArg],
    tenant: Annotated[str, InjectedToolArg],
    filters: Annotated[SearchFilters, InjectedToolArg],
    k: Annotated[int, InjectedToolArg] = 4,
    alpha: Annotated[float, InjectedToolArg] = 0.5,
) -> tuple[str, list[dict[str, Any]]]:
    """Search the insurer's policy wordings, claims procedures and billing terms.

    Use this whenever the answer depends on facts: coverage, limits, deductibles, fees, deadlines, forms, phone
    numbers or procedures. Pass the customer's question (or a focused rewrite of it) as ``query``. The passages
    come back numbered [1], [2], ...; cite the ones you use as [n].
    """
    k = max(1, min(int(k), MAX_K))
    passages: list[Passage] = retriever.search(query, tenant=tenant, k=k, filters=filters, alpha=alpha)
    text = render_passages(passages, query) if passages else "No passages found."
    return text, [p.model_dump() for p in passages]
