"""The claims-workflow API: ``create_app(service, keys)`` returns the FastAPI app ``domainroute serve`` runs.

Every ``/v1`` call needs ``Authorization: Bearer <key>``; the key's tenant scopes threads, escalations and
retrieval. Turns run in a worker thread, one at a time per process (the embedded model is one CPU model);
reads run beside them. Errors are problem details (``domainroute.api.problems``).
"""

from __future__ import annotations

import asyncio
import functools
import math
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from domainroute.api import problems, sse
from domainroute.api.keys import ApiKey, KeyStore, Scope
from domainroute.api.models import (
    THREAD_ID_PATTERN,
    Escalation,
    EscalationList,
    Health,
    MessageRequest,
    Problem,
    Readiness,
    ResumeRequest,
    ReviewPacket,
    ThreadInfo,
)
from domainroute.api.problems import ProblemError
from domainroute.api.ratelimit import RateLimit, TokenBuckets
from domainroute.api.readiness import Readiness as ReadinessProbe
from domainroute.api.tenants import TenantServices
from domainroute.api.threads import ThreadOwners
from domainroute.schemas import MAX_QUERY_CHARS, AskResult, validate_query
from domainroute.service import AgentService

T = TypeVar("T")
MAX_BODY_BYTES = 64 * 1024
ThreadId = Annotated[str, Path(pattern=THREAD_ID_PATTERN, description="A thread id from POST /v1/threads.")]


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": Problem, "description": HTTPStatus(s).phrase} for s in statuses}


def _problem_media_type(app: FastAPI) -> None:
    """Declare error responses as ``application/problem+json`` (FastAPI puts a response ``model`` under JSON)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            for operations in spec["paths"].values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if status[0] in "45" and "application/json" in content:
                            response["content"] = {problems.PROBLEM_JSON: content["application/json"]}
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


@dataclass(frozen=True, slots=True)
class Caller:
    key: ApiKey

    @property
    def tenant(self) -> str:
        return self.key.tenant


class _BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 before the app reads them (declared or streamed)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # FastAPI re-raises an HTTPException from body reading; the handler renders it
                raise HTTPException(413, f"the request body is over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        response = problems.problem_response(413, f"the request body is over {self.limit} bytes",
                                             instance=scope.get("path"), headers={"Connection": "close"})
        await response(scope, receive, send)


class _Api:
    """What the route functions share: services per tenant, keys, owners, rate limits, worker limits."""

    def __init__(self, service: AgentService, keys: KeyStore, owners: ThreadOwners, rate_limit: RateLimit):
        self.tenants = TenantServices(service)
        self.keys = keys
        self.owners = owners
        self.buckets = TokenBuckets(rate_limit)
        self.readiness = ReadinessProbe(service)
        self.turns = anyio.CapacityLimiter(1)  # AgentService serializes turns anyway; queue them here, not in threads
        self.reads = anyio.CapacityLimiter(8)

    async def read(self, func: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(func, *args), limiter=self.reads)

    async def turn(self, func: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(func, *args), limiter=self.turns)

    async def require_ready(self) -> None:
        if not await self.readiness.ensure():
            raise ProblemError(503, f"the service is not ready: {self.readiness.failures()}",
                               headers={"Retry-After": "5"}, checks=self.readiness.snapshot())

    async def owned(self, caller: Caller, thread_id: str) -> str:
        """The thread's creation time; 404 if it is unknown or another tenant's (the two are indistinguishable)."""
        created_at = await self.read(self.owners.created_at, thread_id, caller.tenant)
        if created_at is None:
            raise ProblemError(404, f"no thread {thread_id!r} for this key's tenant")
        return created_at


_bearer = HTTPBearer(auto_error=False, description="An API key from `domainroute keys create TENANT`.")


class _Require:
    """Dependency: a live key whose role allows ``scope``, within its rate limit (401, 403, 429 otherwise)."""

    def __init__(self, scope: Scope):
        self.scope = scope

    def __call__(self, request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
        api: _Api = request.app.state.api
        if credentials is None:
            raise ProblemError(401, "missing API key: send 'Authorization: Bearer <key>' "
                                    "(create one with: domainroute keys create TENANT)")
        key = api.keys.verify(credentials.credentials)
        if key is None:
            raise ProblemError(401, "unknown or revoked API key")
        if not key.allows(self.scope):
            raise ProblemError(403, f"this key's role {key.role!r} may not {self.scope}; "
                                    f"use a key created with --role {self.scope} or --role full")
        wait = api.buckets.take(key.key_id)
        if wait > 0:
            limit = api.buckets.limit
            raise ProblemError(429, f"rate limit of {limit.rate:g} requests/s (burst {limit.burst}) exceeded "
                                    "for this key", headers={"Retry-After": str(max(1, math.ceil(wait)))},
                               retry_after=round(wait, 3))
        return Caller(key)


Reader = Annotated[Caller, Depends(_Require("read"))]
Asker = Annotated[Caller, Depends(_Require("ask"))]
Reviewer = Annotated[Caller, Depends(_Require("review"))]


def _check_length(field: str, text: str | None) -> None:
    if text is not None and len(text.strip()) > MAX_QUERY_CHARS:
        raise ProblemError(413, f"{field} is {len(text.strip())} characters; the limit is {MAX_QUERY_CHARS}")


def _wants_stream(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip() == sse.EVENT_STREAM for part in accept.split(","))


def _thread_info(service: AgentService, thread_id: str, created_at: str) -> ThreadInfo:
    snapshot = service.graph.get_state({"configurable": {"thread_id": thread_id}})
    if snapshot.created_at is None:
        return ThreadInfo(thread_id=thread_id, created_at=created_at, status="new", turns=0)
    result = service.result(thread_id)
    packets = [item.value for task in snapshot.tasks for item in task.interrupts]
    turns = sum(1 for m in snapshot.values.get("messages", []) if m.type == "human")
    return ThreadInfo(thread_id=thread_id, created_at=created_at, status=result.status, turns=turns, result=result,
                      review=ReviewPacket.model_validate(packets[0]) if packets else None)


def _escalations(service: AgentService, thread_ids: set[str]) -> EscalationList:
    """Paused threads among ``thread_ids`` (one state read each: the tenant's threads, not the whole store)."""
    found = []
    for thread_id in thread_ids:
        snapshot = service.graph.get_state({"configurable": {"thread_id": thread_id}})
        for task in snapshot.tasks:
            for item in task.interrupts:
                found.append(Escalation(thread_id=thread_id, created_at=snapshot.created_at,
                                        packet=ReviewPacket.model_validate(item.value)))
    found.sort(key=lambda e: e.created_at or "", reverse=True)
    return EscalationList(escalations=found)


def _ask(service: AgentService, thread_id: str, body: MessageRequest) -> tuple[AskResult, list[dict[str, Any]]]:
    """The turn's result and the passages it retrieved. Runs in the turn worker, so the paused check, the turn and
    the read-back are not interleaved with another turn."""
    if service.is_paused(thread_id):
        raise ProblemError(409, f"thread {thread_id!r} is waiting for a human decision; "
                                f"resume it first: POST /v1/threads/{thread_id}/resume")
    claim = body.claim.model_dump() if body.claim else None
    result = service.ask(body.query, claim, thread_id=thread_id, create=True)
    values = service.graph.get_state({"configurable": {"thread_id": thread_id}}).values
    return result, list(values.get("passages", []))


def _resume(service: AgentService, thread_id: str, body: ResumeRequest) -> AskResult:
    snapshot = service.graph.get_state({"configurable": {"thread_id": thread_id}})
    if snapshot.created_at is None:
        raise ProblemError(409, f"thread {thread_id!r} has no message yet; nothing waits for a decision")
    return service.resume(thread_id, body.model_dump())


async def _event_stream(result: AskResult, passages: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for n, (event, data) in enumerate(sse.turn_events(result, passages), start=1):
        yield sse.encode(event, data, n)
        await asyncio.sleep(0)


def create_app(service: AgentService, keys: KeyStore, *, owners: ThreadOwners | None = None,
               rate_limit: RateLimit = RateLimit(), max_body_bytes: int = MAX_BODY_BYTES,
               warm_up: bool = True) -> FastAPI:
    """The API over ``service`` (its tenant is only the default; each key's tenant scopes its calls).

    ``owners`` defaults to ``<data_dir>/api.sqlite``; ``warm_up`` loads every component when the server starts
    (``/readyz`` answers 503 until it is done) instead of on the first call.
    """
    api = _Api(service, keys, owners or ThreadOwners.in_dir(service.settings.data_dir), rate_limit)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(api.readiness.ensure()) if warm_up else None
        yield
        if task is not None and not task.done():
            task.cancel()

    app = FastAPI(
        title="domainroute claims API",
        version="1",
        summary="Routed, cited answers for claims conversations, with human review of escalated turns.",
        description="Authenticate with `Authorization: Bearer <key>` (create keys with `domainroute keys create "
                    "TENANT`). Errors are RFC 9457 problem details (`application/problem+json`).",
        lifespan=lifespan,
        responses=_problems(400, 401, 403, 413, 422, 429, 503),
    )
    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    problems.install(app)
    _problem_media_type(app)
    app.state.api = api

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """The process answers (liveness)."""
        return Health()

    @app.get("/readyz", response_model=Readiness, tags=["health"], responses=_problems(503))
    async def readyz() -> Readiness | JSONResponse:
        """Model, router, escalation policy, store and checkpointer are loaded; 503 with the checks if not."""
        if await api.readiness.ensure() and not await api.read(api.readiness.service.retriever.healthy):
            api.readiness.checks["store"] = "error: the store does not answer"
        if not api.readiness.ready:
            return problems.problem_response(503, f"not ready: {api.readiness.failures()}", instance="/readyz",
                                             headers={"Retry-After": "5"}, checks=api.readiness.snapshot())
        return Readiness(ready=True, checks=api.readiness.snapshot())

    @app.post("/v1/threads", status_code=201, response_model=ThreadInfo, tags=["threads"])
    async def create_thread(caller: Asker) -> ThreadInfo:
        """Start a conversation for the key's tenant; send its first message with POST .../messages."""
        await api.require_ready()
        thread_id = uuid.uuid4().hex
        try:
            created_at = await api.read(api.owners.add, thread_id, caller.tenant)
        except sqlite3.IntegrityError as exc:  # a uuid4 collision: practically impossible, never silently shared
            raise ProblemError(409, "thread id collision; retry") from exc
        return ThreadInfo(thread_id=thread_id, created_at=created_at, status="new", turns=0)

    @app.post("/v1/threads/{thread_id}/messages", response_model=AskResult, tags=["threads"],
              responses={200: {"content": {sse.EVENT_STREAM: {"schema": {
                  "type": "string", "description": "With `Accept: text/event-stream`: events route, retrieval, "
                  "token (word chunks of the final answer), citation, escalation, done (the JSON answer)."}}}},
                  **_problems(404, 409)})
    async def post_message(thread_id: ThreadId, body: MessageRequest, request: Request,
                           caller: Asker) -> AskResult | StreamingResponse:
        """One customer turn: the same object as `domainroute ask --json`, or a stream of events."""
        _check_length("query", body.query)
        try:
            validate_query(body.query)
        except ValueError as exc:
            raise ProblemError(422, f"query: {exc}") from exc
        await api.owned(caller, thread_id)
        await api.require_ready()
        service = api.tenants.get(caller.tenant)
        result, passages = await api.turn(_ask, service, thread_id, body)
        if not _wants_stream(request):
            return result
        return StreamingResponse(_event_stream(result, passages), media_type=sse.EVENT_STREAM,
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/threads/{thread_id}", response_model=ThreadInfo, tags=["threads"], responses=_problems(404))
    async def get_thread(thread_id: ThreadId, caller: Reader) -> ThreadInfo:
        """The thread's latest result, its turn count and, while it is paused, the review packet."""
        created_at = await api.owned(caller, thread_id)
        await api.require_ready()
        return await api.read(_thread_info, api.tenants.get(caller.tenant), thread_id, created_at)

    @app.post("/v1/threads/{thread_id}/resume", response_model=AskResult, tags=["review"],
              responses=_problems(404, 409))
    async def resume(thread_id: ThreadId, body: ResumeRequest, caller: Reviewer) -> AskResult:
        """Give the human decision for a paused thread (409 if it is not paused)."""
        _check_length("text", body.text)
        await api.owned(caller, thread_id)
        await api.require_ready()
        return await api.turn(_resume, api.tenants.get(caller.tenant), thread_id, body)

    @app.get("/v1/escalations", response_model=EscalationList, tags=["review"])
    async def escalations(caller: Reviewer) -> EscalationList:
        """The key's tenant's threads waiting for a human decision, newest first."""
        await api.require_ready()
        mine = await api.read(api.owners.threads_of, caller.tenant)
        return await api.read(_escalations, api.tenants.get(caller.tenant), mine)

    return app
