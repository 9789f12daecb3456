"""RFC 9457 problem details: every error the API answers is ``application/problem+json``, never a traceback.

| status | type (``urn:domainroute:problem:...``) | when |
|---|---|---|
| 400 | bad-request | the body is not valid JSON, or not a JSON object |
| 401 | unauthorized | no ``Authorization: Bearer`` key, or an unknown / revoked one |
| 403 | forbidden | the key's role does not allow this endpoint |
| 404 | not-found | no such thread for this key's tenant (another tenant's thread is 404 too), no such path |
| 405 | method-not-allowed | wrong HTTP method for the path |
| 409 | conflict | resuming a thread that is not paused; a message to a thread that is paused |
| 413 | too-large | a query or decision text over the limit, or a body over the byte limit |
| 422 | invalid | a field fails validation (empty query, bad claim, edit without text) |
| 429 | rate-limited | the key's token bucket is empty (``Retry-After`` says when to retry) |
| 503 | unavailable | a backend is down or the service is not ready (model, store, checkpointer) |
| 500 | internal | a bug: the body names an incident id that is in the server log with the traceback |
"""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domainroute.errors import (
    BackendUnavailableError,
    ConfigError,
    DomainRouteError,
    InputError,
    NotPausedError,
    ThreadNotFoundError,
    UnknownAdapterError,
)

log = logging.getLogger("domainroute.api")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:domainroute:problem:"
SLUGS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
         409: "conflict", 413: "too-large", 422: "invalid", 429: "rate-limited", 500: "internal", 503: "unavailable"}


class ProblemError(Exception):
    """Raised inside the API to answer with a problem detail."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None, **extensions: Any):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


def problem_body(status: int, detail: str, *, instance: str | None = None, **extensions: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": TYPE_PREFIX + SLUGS.get(status, str(status)), "title": HTTPStatus(status).phrase,
                            "status": status, "detail": detail}
    if instance is not None:
        body["instance"] = instance
    body.update(extensions)
    return body


def problem_response(status: int, detail: str, *, instance: str | None = None, headers: dict[str, str] | None = None,
                     **extensions: Any) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="domainroute"')
    return JSONResponse(problem_body(status, detail, instance=instance, **extensions), status_code=status,
                        headers=headers, media_type=PROBLEM_JSON)


def status_for(exc: DomainRouteError) -> int:
    """The HTTP status of an error the service raised on purpose."""
    if isinstance(exc, ThreadNotFoundError):
        return 404
    if isinstance(exc, NotPausedError):
        return 409
    if isinstance(exc, InputError):
        return 422
    if isinstance(exc, BackendUnavailableError | ConfigError | UnknownAdapterError):
        return 503
    return 500


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Where and what, without echoing the (possibly large or personal) input back."""
    return [{"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")),
             "type": str(err.get("type", ""))} for err in exc.errors()]


def install(app: FastAPI) -> None:
    """Register handlers so that every error leaves as a problem detail."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.status, exc.detail, instance=request.url.path, headers=exc.headers,
                                **exc.extensions)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such path: {request.method} {request.url.path}; see /docs"
        return problem_response(exc.status_code, detail, instance=request.url.path, headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            return problem_response(400, "the request body is not valid JSON", instance=request.url.path,
                                    errors=errors)
        if any(e["loc"] == ["body"] and e["type"] == "model_attributes_type" for e in errors):
            return problem_response(400, "the request body must be a JSON object sent with "
                                         "'Content-Type: application/json'", instance=request.url.path, errors=errors)
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p != "body")
        msg = first["msg"].removeprefix("Value error, ")
        return problem_response(422, f"{where}: {msg}" if where else msg, instance=request.url.path, errors=errors)

    @app.exception_handler(DomainRouteError)
    async def _domain(request: Request, exc: DomainRouteError) -> JSONResponse:
        status = status_for(exc)
        if status == 500:
            return _internal(request, exc)
        headers = {"Retry-After": "5"} if status == 503 else None
        return problem_response(status, str(exc), instance=request.url.path, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal(request, exc)


def _internal(request: Request, exc: Exception) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    log.error("incident %s: %s %s failed", incident, request.method, request.url.path, exc_info=exc)
    return problem_response(500, f"internal error (incident {incident}); the server log has the details",
                            instance=request.url.path, incident=incident)
