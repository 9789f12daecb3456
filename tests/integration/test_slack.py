"""The Slack bot end to end without Slack: the real bolt app on 127.0.0.1 receives signed payloads shaped like
Slack's, and its Web API calls go to a local stand-in that records them, so each test asserts on exactly what would
be posted.

The agent is ``AgentService`` with real SQLite checkpoints and the real graph, on the fakes of ``tests/fakes.py``
(scripted chat model, keyword router, word escalation policy, list retriever), so escalations are deterministic.
``test_real_agent_answers_a_mention`` runs the same path on the real embedded model when it is present.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from domainroute.graphs.nodes import TAKEOVER_MESSAGE
from domainroute.graphs.prompts import awaiting_human_message
from domainroute.settings import BUNDLED_BASE_MODEL, Settings
from domainroute.slack import blocks
from tests.slack_support import (
    BOT_ID,
    BOT_TOKEN,
    BOT_USER,
    ESCALATION_CHANNEL,
    BotHarness,
    block_action,
    fake_service,
    message,
    mention,
    next_ts,
    view_submission,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CHANNEL = "CSUPPORT1"
ANSWER_BLOCKS = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "Chip repair is free [1]."}},
    {"type": "context", "elements": [{"type": "mrkdwn", "text": "route: *auto* (0.90) · adapter: `insurance-auto`"}]},
    {"type": "section", "text": {"type": "mrkdwn", "text": "*Sources*\n1. Auto Glass (`auto-glass@v1#000`)"}},
]
LAWYER = "my lawyer (bob.smith@example.com) says the glass claim is wrong"


@pytest.fixture()
def harness(tmp_path):
    with BotHarness(fake_service(tmp_path / "data")) as h:
        yield h


def lg_thread(h: BotHarness, thread_ts: str, channel: str = CHANNEL) -> str:
    thread_id = h.bot.store.conversation(channel, thread_ts)
    assert thread_id is not None
    return thread_id


def human_turns(h: BotHarness, thread_id: str) -> list[str]:
    state = h.service.graph.get_state({"configurable": {"thread_id": thread_id}})
    return [m.text for m in state.values["messages"] if m.type == "human"]


def escalate(h: BotHarness) -> tuple[str, dict, str]:
    """Mention that escalates; returns (origin thread ts, the packet post, the packet message ts)."""
    event = mention(LAWYER)
    assert h.send_event(event).status == 200
    packet_posts = [c for c in h.api.of("chat.postMessage") if c.params["channel"] == ESCALATION_CHANNEL]
    assert len(packet_posts) == 1
    return event["ts"], packet_posts[0].params, _packet_ts(h)


def _packet_ts(h: BotHarness) -> str:
    """The ts Slack gave the packet message (the stand-in numbers them; the store recorded it)."""
    import sqlite3

    db = sqlite3.connect(h.bot.store.path)
    try:
        (ts,) = db.execute("SELECT ts FROM packets ORDER BY posted_at DESC LIMIT 1").fetchone()
    finally:
        db.close()
    return ts


def click(h: BotHarness, action_id: str, packet_ts: str, packet: dict, *, user: str = "UREVIEW1", wait: bool = True):
    return h.send_interaction(block_action(action_id, channel=ESCALATION_CHANNEL, message_ts=packet_ts,
                                           value=packet["blocks"][-1]["elements"][0]["value"], user=user,
                                           message_blocks=packet["blocks"]), wait=wait)


# ---- conversations ------------------------------------------------------------------------------------------
def test_mention_is_answered_in_its_thread_with_citations(harness):
    event = mention("is glass chip repair covered?")
    reply = harness.send_event(event)
    assert (reply.status, reply.body) == (200, "")
    assert harness.api.posts() == [{
        "channel": CHANNEL, "thread_ts": event["ts"], "text": "Chip repair is free [1].", "blocks": ANSWER_BLOCKS,
        "unfurl_links": False, "unfurl_media": False,
    }]
    assert {c.token for c in harness.api.calls} == {BOT_TOKEN}
    assert human_turns(harness, lg_thread(harness, event["ts"])) == ["is glass chip repair covered?"]


def test_replies_in_the_slack_thread_continue_the_conversation(harness):
    first = mention("is glass chip repair covered?")
    harness.send_event(first)
    thread_id = lg_thread(harness, first["ts"])
    # a plain reply in the thread (message.channels), then a mention in the thread
    harness.send_event(message("and what about a rental car?", thread_ts=first["ts"]))
    harness.send_event(mention("and the deductible for glass?", thread_ts=first["ts"]))
    posts = harness.api.posts()
    assert [p["thread_ts"] for p in posts] == [first["ts"]] * 3
    assert lg_thread(harness, first["ts"]) == thread_id
    assert human_turns(harness, thread_id) == ["is glass chip repair covered?", "and what about a rental car?",
                                               "and the deductible for glass?"]


def test_direct_message_starts_a_conversation_and_unrelated_threads_are_ignored(harness):
    dm = message("is glass chip repair covered?", channel="DCUSTOMER", channel_type="im")
    harness.send_event(dm)
    assert [(p["channel"], p["thread_ts"]) for p in harness.api.posts()] == [("DCUSTOMER", dm["ts"])]
    # people talking in some other channel thread, without mentioning the bot: not the bot's business
    harness.send_event(message("glass?", thread_ts=next_ts()))
    harness.send_event(message("glass, no thread"))
    assert len(harness.api.posts()) == 1


def test_mention_and_message_events_of_one_message_answer_once(harness):
    first = mention("is glass chip repair covered?")
    harness.send_event(first)
    ts = next_ts()  # Slack sends app_mention and message.channels (two event ids) for one message in the thread
    harness.send_event(mention("and the rental?", ts=ts, thread_ts=first["ts"]))
    harness.send_event(message(f"<@{BOT_USER}> and the rental?", ts=ts, thread_ts=first["ts"]))
    assert len(harness.api.posts()) == 2
    assert human_turns(harness, lg_thread(harness, first["ts"]))[-1] == "and the rental?"


# ---- Slack's rules ------------------------------------------------------------------------------------------
def test_a_retry_of_a_handled_event_is_acknowledged_and_ignored(harness, caplog):
    event = mention("is glass chip repair covered?")
    harness.send_event(event, event_id="EvRETRY001")
    with caplog.at_level("INFO", logger="domainroute.slack"):
        retry = harness.send_event(event, event_id="EvRETRY001",
                                   headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert retry.status == 200
    assert len(harness.api.posts()) == 1
    assert "ignored retry 1 (http_timeout) of event EvRETRY001: already handled" in caplog.text
    # a retry of an event this process never received (the first delivery was lost) is handled
    harness.send_event(mention("is glass covered?"), event_id="EvRETRY002", headers={"X-Slack-Retry-Num": "2"})
    assert len(harness.api.posts()) == 2


def test_a_duplicate_event_id_is_ignored(harness, caplog):
    event = mention("is glass chip repair covered?")
    assert harness.send_event(event, event_id="EvDUP00001").status == 200
    with caplog.at_level("INFO", logger="domainroute.slack"):
        assert harness.send_event(event, event_id="EvDUP00001").status == 200
    assert len(harness.api.posts()) == 1
    assert "ignored duplicate delivery of event EvDUP00001: already handled" in caplog.text


@pytest.mark.parametrize("case", ["bad signature", "stale timestamp"])
def test_a_bad_or_stale_signature_gets_401_and_nothing_happens(harness, case):
    event = mention("is glass chip repair covered?")
    kwargs = {"secret": "not-the-signing-secret"} if case == "bad signature" else {"timestamp": int(time.time()) - 600}
    reply = harness.send_event(event, event_id="EvSIGNED01", **kwargs)
    assert reply.status == 401
    assert [c.method for c in harness.api.calls] == ["auth.test"]  # the start-up token check only
    assert harness.bot.store.conversation(CHANNEL, event["ts"]) is None
    # nothing was recorded either: the same event, signed properly, is handled
    assert harness.send_event(event, event_id="EvSIGNED01").status == 200
    assert len(harness.api.posts()) == 1


def test_slacks_url_verification_is_answered_with_the_challenge(harness):
    reply = harness.send_json({"token": "legacy", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                               "type": "url_verification"})
    assert reply.status == 200
    assert json.loads(reply.body) == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    with urllib.request.urlopen(harness.url.replace("/slack/events", "/healthz"), timeout=5) as health:
        assert (health.status, health.read()) == (200, b"ok")


def test_the_bots_own_messages_are_ignored(harness):
    first = mention("is glass chip repair covered?")
    harness.send_event(first)
    # Slack echoes the bot's answer as message events: in the thread it answers in, and in a DM
    harness.send_event(message("Chip repair is free [1].", user=BOT_USER, bot_id=BOT_ID, thread_ts=first["ts"]))
    harness.send_event(message("Chip repair is free [1].", channel="DCUSTOMER", channel_type="im", user=BOT_USER,
                               bot_id=BOT_ID))
    assert len(harness.api.posts()) == 1
    assert human_turns(harness, lg_thread(harness, first["ts"])) == ["is glass chip repair covered?"]


def test_every_request_is_acknowledged_before_the_agent_works(tmp_path):
    """Ack first: with a model that takes 2 s per answer, the HTTP replies still come back at once."""
    from tests.fakes import ScriptedChatModel

    class SlowModel(ScriptedChatModel):
        def _generate(self, *args, **kwargs):
            time.sleep(2.0)
            return super()._generate(*args, **kwargs)

    service = fake_service(tmp_path / "data", chat_model=SlowModel(replies=["Chip repair is free [1]."], calls=[]))
    with BotHarness(service) as h:
        replies = [h.send_event(mention("is glass chip repair covered?"), wait=False) for _ in range(3)]
        assert [r.status for r in replies] == [200, 200, 200]
        assert max(r.seconds for r in replies) < 1.5  # Slack's limit is 3 s; the answers take 2 s each
        assert h.bot.wait_idle(30)
        assert len(h.api.posts()) == 3


# ---- escalations --------------------------------------------------------------------------------------------
def test_an_escalation_posts_the_redacted_packet_with_buttons(harness):
    origin_ts, packet, packet_ts = escalate(harness)
    thread_id = lg_thread(harness, origin_ts)
    customer = harness.api.posts(CHANNEL)
    assert len(customer) == 1 and customer[0]["thread_ts"] == origin_ts
    assert customer[0]["text"] == awaiting_human_message()
    assert "bob.smith@example.com" not in str(packet)
    assert packet["blocks"][2]["text"]["text"] == "*Customer asked*\n>my lawyer ([email]) says the glass claim is wrong"
    assert [f["text"] for f in packet["blocks"][1]["fields"]] == [
        "*Route*\nauto", "*Score*\n1.00", "*Reasons*\nlegal", f"*From*\n<#{CHANNEL}>", "*Claim*\nnone"]
    assert "*Draft answer*\nChip repair is free [1]." == packet["blocks"][4]["text"]["text"]
    actions = packet["blocks"][-1]
    assert actions["type"] == "actions"
    assert [(b["action_id"], b["text"]["text"], b["value"]) for b in actions["elements"]] == [
        (blocks.APPROVE, "Approve", thread_id), (blocks.EDIT, "Edit", thread_id),
        (blocks.TAKE_OVER, "Take over", thread_id)]
    assert harness.service.is_paused(thread_id)
    assert harness.service.paused_threads()[0]["packet"]["query"] == "my lawyer ([email]) says the glass claim is wrong"


def test_approve_resumes_the_graph_posts_the_outcome_and_updates_the_packet(harness):
    origin_ts, packet, packet_ts = escalate(harness)
    thread_id = lg_thread(harness, origin_ts)
    before = time.time()
    assert click(harness, blocks.APPROVE, packet_ts, packet).status == 200
    outcome = harness.api.posts(CHANNEL)[-1]
    assert outcome["thread_ts"] == origin_ts and outcome["text"] == "Chip repair is free [1]."
    assert outcome["blocks"][1]["elements"][0]["text"] == (
        "route: *auto* (0.90) · adapter: `insurance-auto` · reviewed by <@UREVIEW1> (approved)")
    assert outcome["blocks"][2] == ANSWER_BLOCKS[2]  # the approved draft keeps its sources
    (update,) = [c.params for c in harness.api.of("chat.update")]
    assert (update["channel"], update["ts"]) == (ESCALATION_CHANNEL, packet_ts)
    assert all(b["type"] != "actions" for b in update["blocks"])
    decided = update["blocks"][-1]["elements"][0]["text"]
    assert decided.startswith("*Approved* by <@UREVIEW1> at <!date^")
    assert before - 1 <= int(decided.split("^")[1]) <= time.time()
    assert update["blocks"][:-1] == packet["blocks"][:-1]
    result = harness.service.result(thread_id)
    assert result.status == "answered" and not harness.service.is_paused(thread_id)
    state = harness.service.graph.get_state({"configurable": {"thread_id": thread_id}}).values
    assert state["decision"] == {"action": "approve", "text": None, "reviewer": "slack:UREVIEW1"}


def test_a_second_click_on_a_decided_packet_is_refused_politely(harness):
    origin_ts, packet, packet_ts = escalate(harness)
    click(harness, blocks.APPROVE, packet_ts, packet)
    posts, updates = len(harness.api.posts()), len(harness.api.of("chat.update"))
    assert click(harness, blocks.TAKE_OVER, packet_ts, packet, user="UREVIEW2").status == 200
    assert click(harness, blocks.EDIT, packet_ts, packet, user="UREVIEW2").status == 200
    ephemerals = [c.params for c in harness.api.of("chat.postEphemeral")]
    assert [(e["channel"], e["user"]) for e in ephemerals] == [(ESCALATION_CHANNEL, "UREVIEW2")] * 2
    assert all(e["text"].startswith("Thanks, but this escalation was already decided: approved by <@UREVIEW1>")
               for e in ephemerals)
    assert len(harness.api.posts()) == posts and len(harness.api.of("chat.update")) == updates
    assert harness.api.of("views.open") == []


def test_simultaneous_clicks_resume_the_graph_once(harness):
    origin_ts, packet, packet_ts = escalate(harness)
    threads = [threading.Thread(target=click, args=(harness, action, packet_ts, packet),
                                kwargs={"user": user, "wait": False})
               for action, user in [(blocks.APPROVE, "UREVIEW1"), (blocks.TAKE_OVER, "UREVIEW2")]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert harness.bot.wait_idle(30)
    assert len(harness.api.posts(CHANNEL)) == 2  # the awaiting note and one outcome
    assert len(harness.api.of("chat.update")) == 1 and len(harness.api.of("chat.postEphemeral")) == 1


def test_edit_opens_a_modal_and_its_submission_resumes_with_the_text(harness):
    origin_ts, packet, packet_ts = escalate(harness)
    thread_id = lg_thread(harness, origin_ts)
    click(harness, blocks.EDIT, packet_ts, packet)
    (opened,) = [c.params for c in harness.api.of("views.open")]
    view = opened["view"]
    assert opened["trigger_id"].startswith("1234567890.")
    assert view["callback_id"] == blocks.EDIT_MODAL
    assert view["blocks"][0]["element"]["initial_value"] == "Chip repair is free [1]."
    assert harness.service.is_paused(thread_id) and harness.api.of("chat.update") == []

    empty = harness.send_interaction(view_submission(view, "   "))
    assert empty.status == 200 and '"response_action": "errors"' in empty.body
    assert harness.service.is_paused(thread_id)

    assert harness.send_interaction(view_submission(view, "We will call you today about your glass claim.")).body == ""
    outcome = harness.api.posts(CHANNEL)[-1]
    assert (outcome["thread_ts"], outcome["text"]) == (origin_ts, "We will call you today about your glass claim.")
    assert outcome["blocks"][1]["elements"][0]["text"].endswith("reviewed by <@UREVIEW1> (edited)")
    assert len(outcome["blocks"]) == 2  # an edited answer carries no machine citations
    (update,) = [c.params for c in harness.api.of("chat.update")]
    assert update["blocks"][-1]["elements"][0]["text"].startswith("*Edited* by <@UREVIEW1>")
    assert harness.service.result(thread_id).answer == "We will call you today about your glass claim."
    # the same modal submitted again (a second reviewer had it open too): refused inside the modal
    again = harness.send_interaction(view_submission(view, "Something else.", user="UREVIEW2"))
    assert '"response_action": "errors"' in again.body and "already decided" in again.body
    assert len(harness.api.posts(CHANNEL)) == 2


def test_take_over_resumes_with_reject_and_tells_the_customer(harness):
    origin_ts, packet, packet_ts = escalate(harness)
    click(harness, blocks.TAKE_OVER, packet_ts, packet, user="UREVIEW2")
    outcome = harness.api.posts(CHANNEL)[-1]
    assert (outcome["thread_ts"], outcome["text"]) == (origin_ts, TAKEOVER_MESSAGE)
    (update,) = [c.params for c in harness.api.of("chat.update")]
    assert update["blocks"][-1]["elements"][0]["text"].startswith("*Taken over* by <@UREVIEW2>")


def test_a_mention_in_a_paused_conversation_gets_a_polite_reply(harness):
    origin_ts, packet, packet_ts = escalate(harness)
    thread_id = lg_thread(harness, origin_ts)
    harness.send_event(mention("hello? any news on my glass claim?", thread_ts=origin_ts))
    reply = harness.api.posts(CHANNEL)[-1]
    assert (reply["thread_ts"], reply["text"]) == (origin_ts, blocks.PAUSED_REPLY)
    assert len(harness.api.posts(ESCALATION_CHANNEL)) == 1  # no second packet
    assert harness.service.is_paused(thread_id)
    assert human_turns(harness, thread_id) == [LAWYER]


def test_a_packet_that_cannot_be_posted_is_logged_and_the_bot_keeps_working(harness, caplog):
    harness.api.fail[f"chat.postMessage:{ESCALATION_CHANNEL}"] = "not_in_channel"
    event = mention(LAWYER)
    with caplog.at_level("ERROR", logger="domainroute.slack"):
        harness.send_event(event)
    assert f"could not post the escalation for conversation {lg_thread(harness, event['ts'])} to " \
           f"{ESCALATION_CHANNEL}: not_in_channel" in caplog.text
    assert harness.api.posts(CHANNEL)[-1]["text"] == awaiting_human_message()
    assert [p["thread_id"] for p in harness.service.paused_threads()] == [lg_thread(harness, event["ts"])]
    harness.api.fail.clear()
    harness.send_event(mention("is glass chip repair covered?"))
    assert harness.api.posts(CHANNEL)[-1]["text"] == "Chip repair is free [1]."


def test_a_click_after_the_conversation_was_resumed_elsewhere_closes_the_packet(harness):
    origin_ts, packet, packet_ts = escalate(harness)
    harness.service.resume(lg_thread(harness, origin_ts), {"action": "approve", "reviewer": "cli"})  # the CLI
    click(harness, blocks.APPROVE, packet_ts, packet)
    (update,) = [c.params for c in harness.api.of("chat.update")]
    assert all(b["type"] != "actions" for b in update["blocks"])
    assert "resolved outside Slack" in update["blocks"][-1]["elements"][0]["text"]
    (note,) = [c.params for c in harness.api.of("chat.postEphemeral")]
    assert note["user"] == "UREVIEW1" and "nothing was sent" in note["text"]
    assert len(harness.api.posts(CHANNEL)) == 1  # only the awaiting note; the bot posted no outcome


def test_a_failed_resume_reopens_the_packet_for_another_try(harness, monkeypatch):
    from domainroute.errors import BackendUnavailableError

    origin_ts, packet, packet_ts = escalate(harness)
    real_resume = harness.service.resume

    def down(thread_id, decision):
        raise BackendUnavailableError("the model server did not answer")

    monkeypatch.setattr(harness.service, "resume", down)
    click(harness, blocks.APPROVE, packet_ts, packet)
    (note,) = [c.params for c in harness.api.of("chat.postEphemeral")]
    assert "the model server did not answer" in note["text"] and "open again" in note["text"]
    assert harness.api.of("chat.update") == [] and len(harness.api.posts(CHANNEL)) == 1
    monkeypatch.setattr(harness.service, "resume", real_resume)
    click(harness, blocks.APPROVE, packet_ts, packet)
    assert harness.api.posts(CHANNEL)[-1]["text"] == "Chip repair is free [1]."
    assert len(harness.api.of("chat.update")) == 1


# ---- the real agent -----------------------------------------------------------------------------------------
@pytest.mark.skipif(not (BUNDLED_BASE_MODEL / "manifest.json").exists(),
                    reason="the bundled base model is not trained yet (domainroute/models/base/manifest.json)")
@pytest.mark.timeout(900)  # the session's knowledge-base ingest and the model load come first
def test_real_agent_answers_a_mention(data_dir):
    from domainroute.service import AgentService

    with BotHarness(AgentService(Settings(data_dir=data_dir))) as h:
        event = mention("is windshield chip repair covered?")
        h.send_event(event)
        (post,) = h.api.posts()
        result = h.service.result(lg_thread(h, event["ts"]))
        assert post["thread_ts"] == event["ts"] and post["text"] == result.answer
        assert post["blocks"] == blocks.answer_message(result)["blocks"]
        (context,) = [b for b in post["blocks"] if b["type"] == "context"]
        assert context["elements"][0]["text"].startswith(f"route: *{result.route}*")
