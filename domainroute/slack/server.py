"""A small threaded HTTP server for the bolt app (standard library only).

bolt's own ``App.start`` is a single-threaded development server bound to every interface; this one handles each
request in its own thread, binds the host you give it, caps request size and can be shut down (tests, Ctrl-C).
For heavy traffic, mount the app on any WSGI/ASGI server with one of ``slack_bolt.adapter.*`` instead.
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse

logger = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
MAX_BODY_BYTES = 1 << 20  # Slack's payloads are far smaller
SOCKET_TIMEOUT_S = 15.0


class SlackHTTPServer(ThreadingHTTPServer):
    """``POST /slack/events`` -> ``app.dispatch``; ``GET /healthz`` -> 200. Everything else is 404."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog; socketserver's default of 5 resets connections in a burst of events

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 3000, path: str = EVENTS_PATH):
        self.bolt_app = app
        self.events_path = path
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}{self.events_path}"


class _Handler(BaseHTTPRequestHandler):
    server: SlackHTTPServer
    timeout = SOCKET_TIMEOUT_S
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.partition("?")[0] == "/healthz":
            self._send(200, {}, "ok")
        else:
            self._send(404, {}, "")

    def do_POST(self) -> None:  # noqa: N802
        path, _, query = self.path.partition("?")
        if path != self.server.events_path:
            self._send(404, {}, "")
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._send(411, {}, "Content-Length required")
            return
        if int(length) > MAX_BODY_BYTES:
            self._send(413, {}, "request too large")
            return
        body = self.rfile.read(int(length)).decode("utf-8", errors="replace")
        request = BoltRequest(body=body, query=query, headers=self.headers)
        response: BoltResponse = self.server.bolt_app.dispatch(request)
        self._send(response.status, response.headers, response.body)

    def _send(self, status: int, headers: dict[str, Any], body: str | dict[str, Any]) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
        self.send_response(status)
        for name, values in headers.items():
            if name.lower() == "content-length":
                continue
            for value in values if isinstance(values, list | tuple) else [values]:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
