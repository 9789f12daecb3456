"""One ``AgentService`` per tenant, all sharing the base service's heavy components.

``AgentService``'s tenant comes from its settings (it scopes retrieval). The API builds a sibling service per
tenant on first use that reuses the base service's pack, adapters, chat model, router, escalation policy,
retriever and checkpointer: nothing heavy is loaded twice, and every tenant's threads live in one checkpoint store.
"""

from __future__ import annotations

import threading
from typing import Any

from domainroute.api.keys import check_tenant
from domainroute.service import AgentService

SHARED = ("pack", "adapters", "chat_model", "router", "escalation_policy", "retriever", "checkpointer")


class TenantServices:
    def __init__(self, base: AgentService):
        self.base = base
        self._services: dict[str, AgentService] = {base.settings.tenant: base}
        self._lock = threading.Lock()

    def get(self, tenant: str) -> AgentService:
        """The service whose retrieval is scoped to ``tenant`` (built on first use; loads the base's components)."""
        with self._lock:
            service = self._services.get(tenant)
            if service is None:
                check_tenant(tenant)
                shared: dict[str, Any] = {name: getattr(self.base, name) for name in SHARED}
                settings = self.base.settings.model_copy(update={"tenant": tenant})
                service = self._services[tenant] = AgentService(settings, **shared)
            return service
