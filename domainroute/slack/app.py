"""The Slack bot: a bolt ``App`` that drives ``AgentService``.

- A mention or a direct message starts a conversation keyed by the Slack thread (channel + thread_ts); replies in
  that thread continue it. Answers go back in the thread as Block Kit (answer, route/adapter line, sources).
- A turn that pauses for a human posts its redacted escalation packet to the escalation channel with Approve /
  Edit / Take over; the first click resumes the graph, the outcome goes to the original thread and the packet
  message shows who decided and when. Later clicks get a polite ephemeral refusal.
- Slack's rules: every request is acknowledged at once (``process_before_response=False``) and the agent work runs
  afterwards on one worker thread (the service runs one turn at a time anyway); retried or duplicate events are
  ignored by event id; the bot's own messages are ignored; bolt rejects a bad or stale signature with 401.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App, BoltRequest, BoltResponse
from slack_bolt.middleware import Middleware
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from domainroute.errors import ConfigError, DomainRouteError, InputError, NotPausedError, ThreadNotFoundError
from domainroute.schemas import AskResult
from domainroute.slack import blocks
from domainroute.slack.settings import SlackSettings
from domainroute.slack.store import PacketRecord, SlackStore

if TYPE_CHECKING:
    from domainroute.service import AgentService

logger = logging.getLogger("domainroute.slack")

AGENT_WORKERS = 1  # AgentService runs one turn at a time (it holds a lock); more workers would only wait on it
STORE_FILE = "slack.sqlite"
ACCEPTED_SUBTYPES = {None, "thread_broadcast", "file_share"}


# ---- background work that tests and shutdown can wait for ---------------------------------------------------
class _Tracker:
    """Counts submitted-but-unfinished tasks across executors."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending = 0

    def add(self) -> None:
        with self._cond:
            self._pending += 1

    def done(self) -> None:
        with self._cond:
            self._pending -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)


class _TrackedExecutor(ThreadPoolExecutor):
    """A thread pool whose tasks are counted by a shared tracker; a task that raises is logged with its traceback."""

    def __init__(self, tracker: _Tracker, **kwargs: Any):
        super().__init__(**kwargs)
        self._tracker = tracker

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        self._tracker.add()
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._tracker.done()
            raise
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future) -> None:
        try:
            error = None if future.cancelled() else future.exception()
            if error is not None:
                logger.error("background task failed", exc_info=error)
        finally:
            self._tracker.done()


# ---- the event gate -----------------------------------------------------------------------------------------
class _EventGate(Middleware):
    """Acknowledges and drops an event whose id was already taken (a retry, or a duplicate delivery)."""

    def __init__(self, store: SlackStore):
        self.store = store

    def process(self, *, req: BoltRequest, resp: BoltResponse,
                next: Callable[[], BoltResponse]) -> BoltResponse:  # noqa: A002 (bolt's name)
        if req.body.get("type") != "event_callback" or not req.body.get("event_id"):
            return next()
        event_id = req.body["event_id"]
        retry = (req.headers.get("x-slack-retry-num") or [None])[0]
        if self.store.claim(f"event:{event_id}"):
            if retry is not None:
                logger.info("event %s arrives as retry %s but was never handled here; handling it", event_id, retry)
            return next()
        reason = (req.headers.get("x-slack-retry-reason") or ["?"])[0]
        logger.info("ignored %s of event %s: already handled",
                    f"retry {retry} ({reason})" if retry is not None else "duplicate delivery", event_id)
        return BoltResponse(status=200, body="")


_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_LINK = re.compile(r"<([^@#!][^>|]*)(?:\|([^>]*))?>")
_CHANNEL = re.compile(r"<#([CG][A-Z0-9]+)(?:\|([^>]*))?>")


def clean_text(text: str, bot_user_id: str | None) -> str:
    """The question as the user typed it: the bot's mention removed, links and entities turned back into text."""
    text = _MENTION.sub(lambda m: "" if m.group(1) == bot_user_id else f"@{m.group(1)}", text or "")
    text = _CHANNEL.sub(lambda m: f"#{m.group(2) or m.group(1)}", text)
    text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
    return html.unescape(re.sub(r"[ \t]+", " ", text)).strip()


class SlackBot:
    """The bolt app plus what it needs: the store, the agent worker, and the service it drives."""

    def __init__(self, service: AgentService, settings: SlackSettings, client: WebClient | None = None):
        if not settings.escalation_channel:
            raise ConfigError("no escalation channel: set DOMAINROUTE_SLACK_ESCALATION_CHANNEL to a channel ID")
        if client is None:
            if settings.bot_token is None:
                raise ConfigError("no bot token: set SLACK_BOT_TOKEN (xoxb-...)")
            client = WebClient(token=settings.bot_token.get_secret_value())
        if not settings.socket_mode and settings.signing_secret is None:
            raise ConfigError("no signing secret: set SLACK_SIGNING_SECRET (HTTP mode verifies every request)")
        self.service = service
        self.settings = settings
        self.store = SlackStore(service.settings.data_dir / STORE_FILE)
        self._tracker = _Tracker()
        self._listeners = _TrackedExecutor(self._tracker, max_workers=settings.listener_threads,
                                           thread_name_prefix="slack-listener")
        self._agent = _TrackedExecutor(self._tracker, max_workers=AGENT_WORKERS, thread_name_prefix="slack-agent")
        self.app = App(
            name="domainroute",
            client=client,
            signing_secret=settings.signing_secret.get_secret_value() if settings.signing_secret else None,
            request_verification_enabled=not settings.socket_mode,
            process_before_response=False,
            listener_executor=self._listeners,
        )
        self.app.use(_EventGate(self.store))
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.action(blocks.APPROVE)(self._on_approve)
        self.app.action(blocks.TAKE_OVER)(self._on_take_over)
        self.app.action(blocks.EDIT)(self._on_edit)
        self.app.view(blocks.EDIT_MODAL)(self._on_edit_submit)

    @property
    def client(self) -> WebClient:
        return self.app.client

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every acknowledged request has been fully handled; False on timeout."""
        return self._tracker.wait_idle(timeout)

    def close(self, timeout: float = 30.0) -> None:
        self.wait_idle(timeout)
        self._listeners.shutdown(wait=False, cancel_futures=True)
        self._agent.shutdown(wait=False, cancel_futures=True)

    # ---- messages ---------------------------------------------------------------------------------------
    def _on_mention(self, event: dict[str, Any], context: dict[str, Any]) -> None:
        self._accept(event, context)

    def _on_message(self, event: dict[str, Any], context: dict[str, Any]) -> None:
        if event.get("channel_type") == "im":
            self._accept(event, context)
        elif event.get("thread_ts") and self.store.conversation(event.get("channel", ""), event["thread_ts"]):
            self._accept(event, context)  # a reply in a thread the bot is already answering in

    def _accept(self, event: dict[str, Any], context: dict[str, Any]) -> None:
        bot_user_id = context.get("bot_user_id")
        if event.get("subtype") not in ACCEPTED_SUBTYPES or event.get("bot_id") or not event.get("user"):
            return
        if event["user"] == bot_user_id:
            return
        channel, ts = event["channel"], event["ts"]
        if not self.store.claim(f"message:{channel}:{ts}"):
            return  # the app_mention and the message event of one message: answer once
        thread_ts = event.get("thread_ts") or ts
        text = clean_text(event.get("text", ""), bot_user_id)
        self._agent.submit(self._answer_job, channel, thread_ts, text)

    def _answer_job(self, channel: str, thread_ts: str, text: str) -> None:
        try:
            self._answer(channel, thread_ts, text)
        except DomainRouteError as exc:
            logger.error("could not answer in %s/%s: %s", channel, thread_ts, exc)
            self._post(channel, thread_ts, blocks.notice_message(f"Sorry, I couldn't answer that: {exc}"))
        except SlackApiError as exc:
            logger.error("Slack refused a call while answering in %s/%s: %s", channel, thread_ts,
                         exc.response.get("error"))

    def _answer(self, channel: str, thread_ts: str, text: str) -> None:
        thread_id = self.store.conversation(channel, thread_ts)
        try:
            result = self.service.ask(text, thread_id=thread_id)
        except ThreadNotFoundError:
            logger.warning("conversation %s for %s/%s is gone from the checkpoints; starting a new one",
                           thread_id, channel, thread_ts)
            self.store.forget_conversation(channel, thread_ts)
            thread_id = None
            result = self.service.ask(text)
        except InputError as exc:
            if thread_id is not None and self.service.is_paused(thread_id):
                self._post(channel, thread_ts, blocks.notice_message(blocks.PAUSED_REPLY))
            else:
                self._post(channel, thread_ts, blocks.notice_message(f"I couldn't take that question: {exc}"))
            return
        if thread_id is None:
            self.store.save_conversation(channel, thread_ts, result.thread_id)
        self._post(channel, thread_ts, blocks.answer_message(result))
        if result.status == "awaiting_human":
            self._post_packet(result, channel, thread_ts)

    def _post(self, channel: str, thread_ts: str, message: blocks.Message) -> dict[str, Any]:
        return self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, unfurl_links=False,
                                            unfurl_media=False, **message).data  # type: ignore[return-value]

    # ---- escalations ------------------------------------------------------------------------------------
    def pending_packet(self, thread_id: str) -> dict[str, Any]:
        """The redacted packet the paused graph is waiting on (the interrupt's value)."""
        snapshot = self.service.graph.get_state({"configurable": {"thread_id": thread_id}})
        for task in snapshot.tasks:
            for item in task.interrupts:
                return dict(item.value)
        raise DomainRouteError(f"thread {thread_id!r} is awaiting a human but has no escalation packet")

    def _post_packet(self, result: AskResult, origin_channel: str, origin_thread_ts: str) -> None:
        packet = self.pending_packet(result.thread_id)
        message = blocks.packet_message(packet, thread_id=result.thread_id, origin_channel=origin_channel)
        try:
            posted = self.client.chat_postMessage(channel=self.settings.escalation_channel, unfurl_links=False,
                                                  **message)
        except SlackApiError as exc:
            logger.error("could not post the escalation for conversation %s to %s: %s (is the bot in that "
                         "channel? /invite it); `domainroute escalations list` still shows it", result.thread_id,
                         self.settings.escalation_channel, exc.response.get("error"))
            raise
        self.store.save_packet(channel=posted["channel"], ts=posted["ts"], thread_id=result.thread_id,
                               origin_channel=origin_channel, origin_thread_ts=origin_thread_ts, packet=packet)

    @staticmethod
    def _where(body: dict[str, Any]) -> tuple[str, str, str]:
        """(channel, packet message ts, user) of a button click."""
        container = body.get("container") or {}
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id", "")
        ts = (body.get("message") or {}).get("ts") or container.get("message_ts", "")
        return channel, ts, body["user"]["id"]

    def _on_approve(self, ack: Ack, body: dict[str, Any]) -> None:
        ack()
        self._decide(*self._where(body), action="approve")

    def _on_take_over(self, ack: Ack, body: dict[str, Any]) -> None:
        ack()
        self._decide(*self._where(body), action="reject")

    def _decide(self, channel: str, ts: str, user: str, *, action: str, text: str | None = None) -> None:
        won, record = self.store.claim_decision(channel, ts, user=user, action=action)
        if record is None:
            self._ephemeral(channel, user, "I don't know this escalation message; nothing was changed.")
        elif not won:
            self._ephemeral(channel, user, blocks.already_decided_text(record.decided_action, record.decided_by,
                                                                       record.decided_at))
        else:
            self._agent.submit(self._resume_job, record, user, action, text)

    def _on_edit(self, ack: Ack, body: dict[str, Any]) -> None:
        ack()
        channel, ts, user = self._where(body)
        record = self.store.packet(channel, ts)
        if record is None:
            self._ephemeral(channel, user, "I don't know this escalation message; nothing was changed.")
        elif record.decided:
            self._ephemeral(channel, user, blocks.already_decided_text(record.decided_action, record.decided_by,
                                                                       record.decided_at))
        else:  # the trigger id expires after 3 s: open the modal now, not on the agent worker
            self.client.views_open(trigger_id=body["trigger_id"],
                                   view=blocks.edit_modal(record.packet.get("draft") or "",
                                                          json.dumps({"channel": channel, "ts": ts})))

    def _on_edit_submit(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        meta = json.loads(view.get("private_metadata") or "{}")
        value = view["state"]["values"].get(blocks.EDIT_BLOCK, {}).get(blocks.EDIT_INPUT, {}).get("value") or ""
        if not value.strip():
            ack(response_action="errors", errors={blocks.EDIT_BLOCK: "Write the answer the customer should see."})
            return
        user = body["user"]["id"]
        won, record = self.store.claim_decision(meta.get("channel", ""), meta.get("ts", ""), user=user,
                                                action="edit")
        if record is None:
            ack(response_action="errors", errors={blocks.EDIT_BLOCK: "This escalation no longer exists."})
        elif not won:
            label = blocks.DECIDED_LABELS.get(record.decided_action or "", "decided").lower()
            ack(response_action="errors",
                errors={blocks.EDIT_BLOCK: f"Someone else already decided this escalation ({label}); "
                                           "nothing was sent."})
        else:
            ack()
            self._agent.submit(self._resume_job, record, user, "edit", value.strip())

    def _resume_job(self, record: PacketRecord, user: str, action: str, text: str | None) -> None:
        try:
            self._resume(record, user, action, text)
        except SlackApiError as exc:
            logger.error("Slack refused a call while resuming %s: %s", record.thread_id, exc.response.get("error"))

    def _resume(self, record: PacketRecord, user: str, action: str, text: str | None) -> None:
        decision = {"action": action, "text": text, "reviewer": f"slack:{user}"}
        try:
            result = self.service.resume(record.thread_id, decision)
        except NotPausedError:
            note = "No longer waiting: resolved outside Slack (e.g. `domainroute resume`); nothing was sent from here."
            self.client.chat_update(channel=record.channel, ts=record.ts,
                                    **blocks.packet_message(record.packet, thread_id=record.thread_id,
                                                            origin_channel=record.origin_channel, closed=note))
            self._ephemeral(record.channel, user, note)
            return
        except DomainRouteError as exc:
            self.store.release_decision(record.channel, record.ts)
            logger.error("resuming %s with %s failed: %s", record.thread_id, action, exc)
            self._ephemeral(record.channel, user, f"Sorry, I could not resume the conversation: {exc}. "
                                                  "The escalation is open again; please try again.")
            return
        label = blocks.DECIDED_LABELS[action].lower()
        self._post(record.origin_channel, record.origin_thread_ts,
                   blocks.answer_message(result, note=f"reviewed by <@{user}> ({label})"))
        decided = self.store.packet(record.channel, record.ts)
        at = decided.decided_at if decided and decided.decided_at is not None else 0.0
        self.client.chat_update(channel=record.channel, ts=record.ts,
                                **blocks.packet_message(record.packet, thread_id=record.thread_id,
                                                        origin_channel=record.origin_channel,
                                                        decision=(action, user, at)))

    def _ephemeral(self, channel: str, user: str, text: str) -> None:
        self.client.chat_postEphemeral(channel=channel, user=user, text=text)


def create_slack_app(service: AgentService, settings: SlackSettings, client: WebClient | None = None) -> App:
    """The bolt ``App`` for ``service`` (an ``AgentService``); mount it with any ``slack_bolt.adapter``.

    ``client`` replaces the Web API client (tests point one at a local stand-in with ``base_url``).
    """
    return SlackBot(service, settings, client=client).app
