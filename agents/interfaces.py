"""The interfaces the graph depends on. Learned implementations live in router.py and escalation.py."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from domainroute.schemas import Claim, EscalationDecision, RouteDecision


@runtime_checkable
class Router(Protocol):
    """Picks the route for a query. "No confident route" is the value ``out_of_scope``, never an exception."""

    def route(self, query: str, *, previous_route: str | None = None) -> RouteDecision:
        """``previous_route``: the thread's last route; a follow-up keeps it unless confidently elsewhere."""
        ...


@runtime_checkable
class EscalationPolicy(Protocol):
    """Decides whether a human must take the turn; ``reasons`` are trigger names."""

    def decide(self, query: str, claim: Claim | None) -> EscalationDecision: ...
