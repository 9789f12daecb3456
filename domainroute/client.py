"""A small typed client for the claims API (``domainroute serve``): ``Client`` (sync) and ``AsyncClient``.

    from domainroute.client import Client

    with Client("http://127.0.0.1:8000", api_key="drk_...") as api:
        thread = api.create_thread()
        result = api.ask(thread.thread_id, "is hail damage to my roof covered?")   # an AskResult
        for event in api.ask_stream(thread.thread_id, "and the deductible?"):     # StreamEvent(event, data)
            ...

Requests are validated with the API's own pydantic models before they are sent. Errors are raised as
``ApiError`` subclasses (also ``domainroute.errors`` classes: a 404 is a ``ThreadNotFoundError``, a 422 an
``InputError``, a 503 a ``BackendUnavailableError``) carrying the server's problem detail. Only what is safe to
repeat is retried: 429 (never processed) always, honouring ``Retry-After``; 502/503/504 and timeouts for GETs;
connection failures (nothing was sent) always.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from domainroute.api.models import (
    THREAD_ID_PATTERN,
    EscalationList,
    Health,
    MessageRequest,
    Problem,
    Readiness,
    ResumeRequest,
    StreamEvent,
    ThreadInfo,
)
from domainroute.api.sse import EVENT_STREAM, EventDecoder
from domainroute.errors import BackendUnavailableError, DomainRouteError, InputError, ThreadNotFoundError
from domainroute.schemas import AskResult, Claim, validate_query

M = TypeVar("M", bound=BaseModel)
_THREAD_ID = re.compile(THREAD_ID_PATTERN)
MAX_RETRY_AFTER_S = 30.0


class ApiError(DomainRouteError):
    """The API answered an error; ``problem`` is its RFC 9457 problem detail."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.status = problem.status
        super().__init__(f"{problem.status} {problem.title}: {problem.detail}")


class BadRequestError(ApiError, InputError):
    """400, 413 or 422: the request is malformed, too large or invalid."""


class AuthenticationError(ApiError):
    """401: no key, or an unknown or revoked one."""


class PermissionDeniedError(ApiError):
    """403: the key's role does not allow this call."""


class NotFoundError(ApiError, ThreadNotFoundError):
    """404: no such thread for this key's tenant."""


class ConflictError(ApiError, InputError):
    """409: resuming a thread that is not paused, or a message to a thread that is."""


class RateLimitedError(ApiError):
    """429: the key's rate limit; ``retry_after`` is in seconds."""

    @property
    def retry_after(self) -> float:
        return float(getattr(self.problem, "retry_after", 1.0) or 1.0)


class ServiceUnavailableError(ApiError, BackendUnavailableError):
    """503: a backend is down or the service is not ready yet."""


class ServerError(ApiError):
    """Any other 5xx: a server bug; the problem names an incident id that is in the server log."""


_ERRORS: dict[int, type[ApiError]] = {400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError,
                                      404: NotFoundError, 409: ConflictError, 413: BadRequestError,
                                      422: BadRequestError, 429: RateLimitedError, 503: ServiceUnavailableError}


def _error(response: httpx.Response) -> ApiError:
    try:
        problem = Problem.model_validate(response.json())
    except (ValueError, ValidationError):
        problem = Problem(type="about:blank", title=response.reason_phrase or "error", status=response.status_code,
                          detail=response.text[:500])
    cls = _ERRORS.get(response.status_code, ServerError if response.status_code >= 500 else ApiError)
    return cls(problem)


@dataclass(frozen=True, slots=True)
class _Call:
    """One request, built and validated once, sent by either client."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    model: type[BaseModel] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def idempotent(self) -> bool:
        return self.method == "GET"


@dataclass(frozen=True, slots=True)
class _Retry:
    retries: int = 2
    backoff_s: float = 0.5

    def delay(self, call: _Call, attempt: int, response: httpx.Response | None,
              error: Exception | None) -> float | None:
        """Seconds to wait before retrying ``call``, or None to give up and surface the outcome."""
        if attempt >= self.retries:
            return None
        backoff = self.backoff_s * 2 ** attempt
        if error is not None:
            if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
                return backoff
            return backoff if call.idempotent and isinstance(error, httpx.TimeoutException) else None
        assert response is not None
        if response.status_code == 429 or (call.idempotent and response.status_code in (502, 503, 504)):
            header = response.headers.get("retry-after", "")
            return min(float(header), MAX_RETRY_AFTER_S) if header.isdigit() else backoff
        return None


def _thread(thread_id: str) -> str:
    if not isinstance(thread_id, str) or not _THREAD_ID.match(thread_id):
        raise InputError(f"invalid thread id {thread_id!r}: use the thread_id from create_thread()")
    return thread_id


def _message(thread_id: str, query: str, claim: Claim | dict[str, Any] | None, *, stream: bool) -> _Call:
    try:
        validate_query(query)
        body = MessageRequest(query=query, claim=claim)
    except (ValueError, ValidationError) as exc:
        raise InputError(str(exc)) from exc
    headers = {"Accept": EVENT_STREAM} if stream else {}
    return _Call("POST", f"/v1/threads/{_thread(thread_id)}/messages", body.model_dump(mode="json"), AskResult,
                 headers)


def _resume(thread_id: str, action: str, text: str | None, reviewer: str | None) -> _Call:
    try:
        body = ResumeRequest.model_validate({"action": action, "text": text, "reviewer": reviewer})
    except ValidationError as exc:
        raise InputError(str(exc)) from exc
    return _Call("POST", f"/v1/threads/{_thread(thread_id)}/resume", body.model_dump(mode="json"), AskResult)


def _parse(call: _Call, response: httpx.Response) -> Any:
    if response.is_error:
        raise _error(response)
    return call.model.model_validate(response.json()) if call.model else response.json()


class _Calls:
    """The API's calls as data; ``Client`` and ``AsyncClient`` only differ in how they send them."""

    healthz = _Call("GET", "/healthz", model=Health)
    readyz = _Call("GET", "/readyz", model=Readiness)
    create_thread = _Call("POST", "/v1/threads", model=ThreadInfo)
    escalations = _Call("GET", "/v1/escalations", model=EscalationList)

    @staticmethod
    def get_thread(thread_id: str) -> _Call:
        return _Call("GET", f"/v1/threads/{_thread(thread_id)}", model=ThreadInfo)


class _Base:
    def __init__(self, base_url: str, api_key: str | None, timeout: float, retries: int, backoff_s: float):
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._retry = _Retry(retries=retries, backoff_s=backoff_s)


class Client(_Base):
    """Synchronous client. ``timeout`` covers one request (a turn on a busy CPU server can take tens of seconds)."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 120.0, retries: int = 2,
                 backoff_s: float = 0.5, transport: httpx.BaseTransport | None = None):
        super().__init__(base_url, api_key, timeout, retries, backoff_s)
        self._http = httpx.Client(base_url=self._base_url, headers=self._headers, timeout=timeout,
                                  transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.json, headers=call.headers)
            except httpx.TransportError as exc:
                if (wait := self._retry.delay(call, attempt, None, exc)) is None:
                    raise BackendUnavailableError(f"{call.method} {self._base_url}{call.path}: {exc}") from exc
            else:
                if (wait := self._retry.delay(call, attempt, response, None)) is None:
                    return response
            time.sleep(wait)
            attempt += 1

    def _run(self, call: _Call) -> Any:
        return _parse(call, self._send(call))

    def healthz(self) -> Health:
        return self._run(_Calls.healthz)

    def readyz(self) -> Readiness:
        """Readiness; raises ServiceUnavailableError (with the checks in ``problem``) while not ready."""
        return self._run(_Calls.readyz)

    def create_thread(self) -> ThreadInfo:
        return self._run(_Calls.create_thread)

    def get_thread(self, thread_id: str) -> ThreadInfo:
        return self._run(_Calls.get_thread(thread_id))

    def ask(self, thread_id: str, query: str, claim: Claim | dict[str, Any] | None = None) -> AskResult:
        return self._run(_message(thread_id, query, claim, stream=False))

    def ask_stream(self, thread_id: str, query: str, claim: Claim | dict[str, Any] | None = None
                   ) -> Iterator[StreamEvent]:
        """The turn's events: route, retrieval, token..., citation..., escalation, done (see domainroute.api.sse)."""
        call = _message(thread_id, query, claim, stream=True)
        with self._http.stream(call.method, call.path, json=call.json, headers=call.headers) as response:
            if response.is_error:
                response.read()
                raise _error(response)
            decoder = EventDecoder()
            for line in response.iter_lines():
                if (event := decoder.feed(line)) is not None:
                    yield event
            if (event := decoder.flush()) is not None:
                yield event

    def resume(self, thread_id: str, action: str, text: str | None = None, reviewer: str | None = None) -> AskResult:
        return self._run(_resume(thread_id, action, text, reviewer))

    def escalations(self) -> EscalationList:
        return self._run(_Calls.escalations)


class AsyncClient(_Base):
    """The same calls as ``Client``, for asyncio."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 120.0, retries: int = 2,
                 backoff_s: float = 0.5, transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(base_url, api_key, timeout, retries, backoff_s)
        self._http = httpx.AsyncClient(base_url=self._base_url, headers=self._headers, timeout=timeout,
                                       transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.json, headers=call.headers)
            except httpx.TransportError as exc:
                if (wait := self._retry.delay(call, attempt, None, exc)) is None:
                    raise BackendUnavailableError(f"{call.method} {self._base_url}{call.path}: {exc}") from exc
            else:
                if (wait := self._retry.delay(call, attempt, response, None)) is None:
                    return response
            await asyncio.sleep(wait)
            attempt += 1

    async def _run(self, call: _Call) -> Any:
        return _parse(call, await self._send(call))

    async def healthz(self) -> Health:
        return await self._run(_Calls.healthz)

    async def readyz(self) -> Readiness:
        return await self._run(_Calls.readyz)

    async def create_thread(self) -> ThreadInfo:
        return await self._run(_Calls.create_thread)

    async def get_thread(self, thread_id: str) -> ThreadInfo:
        return await self._run(_Calls.get_thread(thread_id))

    async def ask(self, thread_id: str, query: str, claim: Claim | dict[str, Any] | None = None) -> AskResult:
        return await self._run(_message(thread_id, query, claim, stream=False))

    async def ask_stream(self, thread_id: str, query: str, claim: Claim | dict[str, Any] | None = None
                         ) -> AsyncIterator[StreamEvent]:
        call = _message(thread_id, query, claim, stream=True)
        async with self._http.stream(call.method, call.path, json=call.json, headers=call.headers) as response:
            if response.is_error:
                await response.aread()
                raise _error(response)
            decoder = EventDecoder()
            async for line in response.aiter_lines():
                if (event := decoder.feed(line)) is not None:
                    yield event
            if (event := decoder.flush()) is not None:
                yield event

    async def resume(self, thread_id: str, action: str, text: str | None = None,
                     reviewer: str | None = None) -> AskResult:
        return await self._run(_resume(thread_id, action, text, reviewer))

    async def escalations(self) -> EscalationList:
        return await self._run(_Calls.escalations)
