"""The claims-workflow HTTP API (``domainroute serve``): FastAPI on uvicorn, driving ``AgentService``.

``create_app`` lives in ``domainroute.api.app``; this package's ``__init__`` imports nothing heavy so that
``domainroute.client`` (which reuses ``domainroute.api.models`` and ``domainroute.api.sse``) stays light.
"""
