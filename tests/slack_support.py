"""Slack without Slack, for the bot's tests and its benchmark.

- ``FakeSlackAPI``: a local HTTP server standing in for Slack's Web API (point ``WebClient(base_url=...)`` at it);
  it records every call and answers ``ok`` the way Slack would.
- ``sign``: the request signature exactly as Slack computes it (``v0=`` HMAC-SHA256 of ``v0:{ts}:{body}``).
- payload builders shaped like Slack's (Events API envelope, ``block_actions``, ``view_submission``).
- ``BotHarness``: the real bolt app (``SlackBot``) served on 127.0.0.1 in a background thread, its Web API
  calls going to a ``FakeSlackAPI``, driving an ``AgentService`` built on the fakes of ``tests/fakes.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BOT_USER = "UBOT0001"
BOT_ID = "BBOT0001"
TEAM = "T0000001"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-token"
ESCALATION_CHANNEL = "CREVIEW01"


# ---- the Web API stand-in -----------------------------------------------------------------------------------
@dataclass
class Call:
    method: str
    params: dict[str, Any]
    token: str | None
    at: float = field(default_factory=time.perf_counter)  # when the stand-in received it


class FakeSlackAPI:
    """Records Web API calls; answers like Slack. ``fail["chat.postMessage"] = "error_code"`` makes a method answer
    ok=false; ``fail["chat.postMessage:C123"]`` only for that channel."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.fail: dict[str, str] = {}
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                method = self.path.rsplit("/", 1)[-1]
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
                if "json" in (self.headers.get("Content-Type") or ""):
                    params = json.loads(raw or "{}")
                else:
                    params = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
                auth = self.headers.get("Authorization") or ""
                body = api._answer(method, params, auth.removeprefix("Bearer ") or None)
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    def start(self) -> FakeSlackAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, method: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        with self._lock:
            self.calls.append(Call(method, params, token))
            ts = f"1800000000.{next(self._ts):06d}"
        error = self.fail.get(f"{method}:{params.get('channel')}") or self.fail.get(method)
        if error:
            return {"ok": False, "error": error}
        if method == "auth.test":
            return {"ok": True, "url": "https://test.slack.com/", "team": "Test", "user": "domainroute",
                    "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": False}
        if method == "chat.postMessage":
            return {"ok": True, "channel": params["channel"], "ts": ts,
                    "message": {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "ts": ts,
                                "text": params.get("text", ""), "blocks": params.get("blocks", [])}}
        if method == "chat.update":
            return {"ok": True, "channel": params["channel"], "ts": params["ts"], "text": params.get("text", "")}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": ts}
        if method == "views.open":
            return {"ok": True, "view": {"id": "V0000001", **params.get("view", {})}}
        return {"ok": True}

    def of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def posts(self, channel: str | None = None) -> list[dict[str, Any]]:
        return [c.params for c in self.of("chat.postMessage") if channel is None or c.params["channel"] == channel]


# ---- what Slack sends ---------------------------------------------------------------------------------------
def sign(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """X-Slack-Signature and X-Slack-Request-Timestamp as Slack computes them."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


_event_ids = itertools.count(1)
_message_ts = itertools.count(1)


def next_ts() -> str:
    return f"1700000000.{next(_message_ts):06d}"


def event_envelope(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "token": "legacy-verification-token", "team_id": TEAM, "api_app_id": "A0000001", "event": event,
        "type": "event_callback", "event_id": event_id or f"Ev{next(_event_ids):08d}",
        "event_time": int(time.time()), "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
        "is_ext_shared_channel": False, "event_context": "4-eyJldCI6ImFwcF9tZW50aW9uIn0",
    }


def mention(text: str, *, channel: str = "CSUPPORT1", user: str = "UCUSTOMER", ts: str | None = None,
            thread_ts: str | None = None) -> dict[str, Any]:
    ts = ts or next_ts()
    event = {"type": "app_mention", "user": user, "text": f"<@{BOT_USER}> {text}", "ts": ts, "channel": channel,
             "event_ts": ts, "team": TEAM}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def message(text: str, *, channel: str = "CSUPPORT1", channel_type: str = "channel", user: str = "UCUSTOMER",
            ts: str | None = None, thread_ts: str | None = None, bot_id: str | None = None) -> dict[str, Any]:
    ts = ts or next_ts()
    event = {"type": "message", "channel": channel, "channel_type": channel_type, "user": user, "text": text,
             "ts": ts, "event_ts": ts, "team": TEAM}
    if thread_ts:
        event["thread_ts"] = thread_ts
    if bot_id:
        event["bot_id"] = bot_id
        event["app_id"] = "A0000001"
    return event


def block_action(action_id: str, *, channel: str, message_ts: str, value: str, user: str = "UREVIEW1",
                 message_blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "type": "block_actions", "user": {"id": user, "username": "reviewer", "name": "reviewer", "team_id": TEAM},
        "api_app_id": "A0000001", "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": f"1234567890.{TEAM}.abcdef{next(_event_ids)}", "team": {"id": TEAM, "domain": "test"},
        "enterprise": None, "is_enterprise_install": False, "channel": {"id": channel, "name": "claims-review"},
        "message": {"type": "message", "ts": message_ts, "user": BOT_USER, "bot_id": BOT_ID,
                    "text": "Escalation", "blocks": message_blocks or []},
        "state": {"values": {}}, "response_url": f"https://hooks.slack.com/actions/{TEAM}/1/abc",
        "actions": [{"action_id": action_id, "block_id": "escalation_decision", "value": value, "type": "button",
                     "text": {"type": "plain_text", "text": action_id}, "action_ts": f"{time.time():.6f}"}],
    }


def view_submission(view: dict[str, Any], text: str | None, *, user: str = "UREVIEW1") -> dict[str, Any]:
    values = {"edited_answer": {"text": {"type": "plain_text_input", "value": text}}}
    return {
        "type": "view_submission", "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "username": "reviewer", "name": "reviewer", "team_id": TEAM},
        "api_app_id": "A0000001", "token": "legacy-verification-token", "trigger_id": f"99.{TEAM}.x",
        "view": {"id": "V0000001", "team_id": TEAM, "type": "modal", "callback_id": view["callback_id"],
                 "private_metadata": view["private_metadata"], "blocks": view["blocks"], "title": view["title"],
                 "state": {"values": values}, "hash": "1700000000.abc", "app_id": "A0000001",
                 "bot_id": BOT_ID, "root_view_id": "V0000001", "previous_view_id": None},
        "response_urls": [], "is_enterprise_install": False, "enterprise": None,
    }


@dataclass
class Reply:
    status: int
    body: str
    seconds: float


def post(url: str, body: str, headers: dict[str, str], *, timeout: float = 10.0) -> Reply:
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, response.read().decode(), time.perf_counter() - start)
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read().decode(), time.perf_counter() - start)


# ---- the bot, served --------------------------------------------------------------------------------------
def fake_service(data_dir: Path, *, replies: list[str] | None = None, chat_model: Any = None):
    """An AgentService on the fakes of tests/fakes.py (no model) with real SQLite checkpoints in ``data_dir``."""
    from domainroute.pack import load_pack
    from domainroute.service import AgentService
    from domainroute.settings import BUNDLED_PACK, Settings
    from tests.fakes import KeywordRouter, ListRetriever, ScriptedChatModel, WordPolicy, passage, served_adapters

    model = chat_model or ScriptedChatModel(replies=replies or ["Chip repair is free [1].\nSources: [1]"], calls=[])
    retriever = ListRetriever([
        passage("auto-glass@v1#000", "Glass chip repair has a $0 deductible under comprehensive."),
        passage("auto-rental@v1#001", "Rental reimbursement pays $40 per day up to $1,200."),
        passage("home-water@v1#000", "Sudden and accidental water discharge is covered.", line="home"),
    ])
    return AgentService(
        Settings(data_dir=data_dir), pack=load_pack(BUNDLED_PACK), chat_model=model, adapters=served_adapters(load_pack(BUNDLED_PACK)),
        router=KeywordRouter({"glass": "auto", "rental": "auto", "pipe": "home", "joke": "out_of_scope"}),
        retriever=retriever, escalation_policy=WordPolicy({"lawyer": "legal"}),
    )


@dataclass
class BotHarness:
    """The real bolt app on 127.0.0.1 with its Web API calls going to ``api``. Use as a context manager."""

    service: Any
    api: FakeSlackAPI = field(default_factory=FakeSlackAPI)
    listener_threads: int = 8

    def __enter__(self) -> BotHarness:
        from slack_sdk import WebClient

        from domainroute.slack.app import SlackBot
        from domainroute.slack.server import SlackHTTPServer
        from domainroute.slack.settings import SlackSettings

        self.api.start()
        try:
            settings = SlackSettings(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET,
                                     escalation_channel=ESCALATION_CHANNEL, listener_threads=self.listener_threads)
            self.bot = SlackBot(self.service, settings,
                                client=WebClient(token=BOT_TOKEN, base_url=self.api.base_url, timeout=10))
            self.server = SlackHTTPServer(self.bot.app, host="127.0.0.1", port=0)
        except BaseException:
            self.api.stop()
            raise
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.server.shutdown()
            self.server.server_close()
            self._thread.join(timeout=5)
            self.bot.close(timeout=10)
        finally:
            self.api.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def send_event(self, event: dict[str, Any], *, event_id: str | None = None, headers: dict[str, str] | None = None,
                   secret: str = SIGNING_SECRET, timestamp: int | None = None, wait: bool = True) -> Reply:
        return self.send_json(event_envelope(event, event_id), headers=headers, secret=secret, timestamp=timestamp,
                              wait=wait)

    def send_json(self, envelope: dict[str, Any], *, headers: dict[str, str] | None = None,
                  secret: str = SIGNING_SECRET, timestamp: int | None = None, wait: bool = True) -> Reply:
        body = json.dumps(envelope)
        reply = post(self.url, body, {"Content-Type": "application/json",
                                      **sign(body, secret=secret, timestamp=timestamp), **(headers or {})})
        if wait:
            assert self.bot.wait_idle(30), "the bot did not finish its work within 30 s"
        return reply

    def send_interaction(self, payload: dict[str, Any], *, wait: bool = True) -> Reply:
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        reply = post(self.url, body, {"Content-Type": "application/x-www-form-urlencoded", **sign(body)})
        if wait:
            assert self.bot.wait_idle(30), "the bot did not finish its work within 30 s"
        return reply
