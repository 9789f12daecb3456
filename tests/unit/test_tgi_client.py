"""TGIChatModel against a small HTTP server on 127.0.0.1 that speaks TGI's generate API and records requests.

huggingface_hub 2.4's ``InferenceClient(base_url=...).text_generation`` POSTs JSON
``{"inputs": prompt, "parameters": {...}}`` to the base URL and accepts ``[{"generated_text": ...}]`` or
``{"generated_text": ...}``; TGI errors carry ``{"error": ..., "error_type": ...}``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from domainroute.agents.tgi import GenerateParams, TGIChatModel
from domainroute.errors import BackendUnavailableError, InputError, UnknownAdapterError

pytestmark = pytest.mark.unit

# (status, JSON body or raw bytes, delay seconds) per request, in order; the last one repeats.
Reply = tuple[int, object, float]


@dataclass
class FakeTGI:
    url: str
    replies: list[Reply]
    requests: list[dict] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


@pytest.fixture
def tgi() -> Iterator[Callable[[list[Reply]], FakeTGI]]:
    servers: list[ThreadingHTTPServer] = []

    def start(replies: list[Reply]) -> FakeTGI:
        state = FakeTGI(url="", replies=list(replies))

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                state.times.append(time.monotonic())
                state.requests.append({"path": self.path, "json": json.loads(body)})
                index = min(len(state.requests), len(state.replies)) - 1
                status, payload, delay = state.replies[index]
                time.sleep(delay)
                raw = isinstance(payload, bytes)  # e.g. a proxy's HTML error page
                out = payload if raw else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/html" if raw else "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and went away
                    pass

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        state.url = f"http://127.0.0.1:{server.server_address[1]}"
        return state

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A tiny tokenizer with the project's chat template (no model needed)."""
    from domainroute.agents.base_model import train_tokenizer

    path = tmp_path_factory.mktemp("tok")
    train_tokenizer(["Passages: none\nQuestion: is my windshield covered?"] * 4, 300).save_pretrained(path)
    return path


def _model(url: str, **kwargs) -> TGIChatModel:
    defaults = dict(base_url=url, adapters=["insurance-auto", "insurance-home"], timeout_s=5.0, max_retries=3,
                    backoff_s=0.05)
    return TGIChatModel(**{**defaults, **kwargs})


OK: Reply = (200, [{"generated_text": "Coverage: comprehensive\nSources: [1]"}], 0.0)


def test_sends_prompt_adapter_id_and_parameters(tgi, tokenizer_dir):
    server = tgi([OK])
    model = _model(server.url, tokenizer_path=tokenizer_dir, max_new_tokens=64)
    reply = model.bind(adapter_id="insurance-auto").invoke(
        [SystemMessage("be careful"), HumanMessage("is my windshield covered?")])
    assert reply.content == "Coverage: comprehensive\nSources: [1]"
    assert reply.response_metadata["adapter_id"] == "insurance-auto"
    assert len(server.requests) == 1
    sent = server.requests[0]
    assert sent["path"] == "/"
    assert sent["json"]["inputs"] == "<|system|>\nbe careful<|end|>\n<|user|>\nis my windshield covered?<|end|>\n<|assistant|>\n"
    assert sent["json"]["parameters"] == {"adapter_id": "insurance-auto", "max_new_tokens": 64, "do_sample": False,
                                          "repetition_penalty": 1.1, "stop": []}


def test_base_model_request_sends_no_adapter_id(tgi):
    server = tgi([(200, {"generated_text": "plain"}, 0.0)])  # TGI may answer with a bare object too
    assert _model(server.url).generate_text("p", GenerateParams(max_new_tokens=5)) == "plain"
    assert "adapter_id" not in server.requests[0]["json"]["parameters"]


@pytest.mark.parametrize("bad", [0, -3, 5000])
def test_bad_max_new_tokens_is_refused_before_sending(tgi, tokenizer_dir, bad):
    server = tgi([OK])
    model = _model(server.url, tokenizer_path=tokenizer_dir)
    with pytest.raises(InputError, match="max_new_tokens"):
        model.invoke([HumanMessage("hi")], max_new_tokens=bad)
    assert server.requests == []


def test_unknown_parameter_is_refused_before_sending(tgi, tokenizer_dir):
    server = tgi([OK])
    with pytest.raises(TypeError, match="temperature"):
        _model(server.url, tokenizer_path=tokenizer_dir).invoke([HumanMessage("hi")], temperature=0.7)
    assert server.requests == []


def test_unknown_adapter_is_refused_without_a_request(tgi, tokenizer_dir):
    server = tgi([OK])
    with pytest.raises(UnknownAdapterError) as info:
        _model(server.url, tokenizer_path=tokenizer_dir).bind(adapter_id="insurance-pets").invoke([HumanMessage("hi")])
    assert "insurance-auto, insurance-home" in str(info.value)
    assert server.requests == []


@pytest.mark.parametrize("status, body", [
    (429, {"error": "Model is overloaded", "error_type": "overloaded"}),  # TGI's queue-full answer
    (503, {"error": "service unavailable"}),
    (502, b"<html><body>502 Bad Gateway</body></html>"),  # a proxy in front of TGI
])
def test_retryable_errors_are_retried_with_backoff_then_succeed(tgi, status, body):
    server = tgi([(status, body, 0.0), (status, body, 0.0), OK])
    text = _model(server.url, backoff_s=0.05).generate_text("p", GenerateParams(adapter_id="insurance-home"))
    assert text.startswith("Coverage:")
    assert len(server.requests) == 3
    gaps = [b - a for a, b in zip(server.times, server.times[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.10  # exponential backoff: 0.05 s, then 0.10 s
    assert all(r["json"]["parameters"]["adapter_id"] == "insurance-home" for r in server.requests)


@pytest.mark.parametrize("status, body", [
    (400, {"error": "Input validation error: `inputs` must not be empty", "error_type": "validation"}),
    (422, {"error": "Input validation error", "error_type": "validation"}),
    (404, {"error": "not found"}),
])
def test_client_errors_are_not_retried(tgi, status, body):
    server = tgi([(status, body, 0.0), OK])
    with pytest.raises(BackendUnavailableError, match=str(status)):
        _model(server.url).generate_text("p", GenerateParams())
    assert len(server.requests) == 1


def test_gives_up_after_max_retries(tgi):
    server = tgi([(503, {"error": "down"}, 0.0)])
    with pytest.raises(BackendUnavailableError, match="after 3 attempts"):
        _model(server.url, max_retries=2, backoff_s=0.01).generate_text("p", GenerateParams())
    assert len(server.requests) == 3


def test_timeout_is_retried(tgi):
    server = tgi([(200, [{"generated_text": "late"}], 1.5), OK])
    text = _model(server.url, timeout_s=0.3, backoff_s=0.01).generate_text("p", GenerateParams())
    assert text.startswith("Coverage:")
    assert len(server.requests) == 2


def test_connection_refused_is_retried_then_reported(tgi):
    server = tgi([OK])
    url = server.url
    # A port nothing listens on: bind one, note it, close it.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(BackendUnavailableError, match="after 2 attempts"):
        _model(dead, max_retries=1, backoff_s=0.01).generate_text("p", GenerateParams())
    assert url  # the live server stayed untouched
    assert server.requests == []
