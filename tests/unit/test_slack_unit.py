"""The Slack bot's fast parts: Block Kit builders, the SQLite store, text cleaning, settings, the command's
missing-secret error, and the manifest against the handlers. No servers, no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from domainroute.cli import main
from domainroute.schemas import AskResult, Citation, EscalationDecision
from domainroute.slack import blocks
from domainroute.slack.app import clean_text
from domainroute.slack.settings import SlackSettings
from domainroute.slack.store import SlackStore

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
SLACK_ENV = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "DOMAINROUTE_SLACK_ESCALATION_CHANNEL")


def result(**overrides) -> AskResult:
    values = dict(thread_id="t1", status="answered", route="auto", confidence=0.912, adapter="auto-v1",
                  answer="Chip repair is free [1]; rental is $40/day [2].",
                  citations=[Citation(doc_id="auto-glass", chunk_id="auto-glass@v1#000", title="Auto Glass"),
                             Citation(doc_id="auto-rental", chunk_id="auto-rental@v1#001", title="Rental <Terms>")],
                  escalation=EscalationDecision(escalate=False, score=0.1, reasons=[]))
    return AskResult(**{**values, **overrides})


# ---- blocks -------------------------------------------------------------------------------------------------
def test_answer_message_has_the_answer_a_route_line_and_numbered_sources():
    msg = blocks.answer_message(result())
    assert msg["text"] == "Chip repair is free [1]; rental is $40/day [2]."
    assert msg["blocks"] == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "Chip repair is free [1]; rental is $40/day [2]."}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "route: *auto* (0.91) · adapter: `auto-v1`"}]},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Sources*\n1. Auto Glass (`auto-glass@v1#000`)\n"
                                                              "2. Rental &lt;Terms&gt; (`auto-rental@v1#001`)"}},
    ]


def test_answer_text_is_escaped_and_long_answers_are_split_not_cut():
    msg = blocks.answer_message(result(answer="<!channel> & " + "x" * 3500, citations=[], adapter=None))
    sections = [b["text"]["text"] for b in msg["blocks"] if b["type"] == "section"]
    assert sections[0].startswith("&lt;!channel&gt; &amp; ") and len(sections) == 2
    assert "".join(sections) == "&lt;!channel&gt; &amp; " + "x" * 3500
    assert msg["blocks"][-1]["elements"][0]["text"].endswith("adapter: base model")


def test_a_paused_answer_shows_no_sources_and_says_it_waits():
    msg = blocks.answer_message(result(status="awaiting_human", answer="A specialist will reply."))
    assert [b["type"] for b in msg["blocks"]] == ["section", "context"]
    assert msg["blocks"][1]["elements"][0]["text"].endswith("· waiting for a specialist")


PACKET = {"route": "auto", "claim": {"line": "auto", "amount": 8000, "policy_age_days": 400, "prior_claims_12m": 0,
                                     "contacts_on_claim": 2},
          "reasons": ["legal", "large_claim"], "score": 0.87, "query": "my lawyer <x> says", "summary": "customer: hi",
          "citations": [{"doc_id": "d", "chunk_id": "d@v1#000", "title": "Doc"}], "draft": "Draft [1]."}


def test_the_packet_has_three_buttons_carrying_the_thread_id():
    msg = blocks.packet_message(PACKET, thread_id="abc", origin_channel="C1")
    actions = msg["blocks"][-1]
    assert actions["block_id"] == blocks.DECISION_BLOCK
    assert [(e["action_id"], e["value"], e.get("style")) for e in actions["elements"]] == [
        (blocks.APPROVE, "abc", "primary"), (blocks.EDIT, "abc", None), (blocks.TAKE_OVER, "abc", "danger")]
    assert "confirm" in actions["elements"][2]
    text = json.dumps(msg["blocks"])
    assert "my lawyer &lt;x&gt; says" in text and "legal, large_claim" in text and "amount 8,000.00" in text
    assert blocks.ACTIONS == {blocks.APPROVE: "approve", blocks.EDIT: "edit", blocks.TAKE_OVER: "reject"}


def test_a_decided_packet_drops_the_buttons_and_says_who_and_when():
    open_msg = blocks.packet_message(PACKET, thread_id="abc", origin_channel="C1")
    decided = blocks.packet_message(PACKET, thread_id="abc", origin_channel="C1", decision=("reject", "U9", 1.8e9))
    assert decided["blocks"][:-1] == open_msg["blocks"][:-1]
    assert decided["blocks"][-1] == {"type": "context", "elements": [{"type": "mrkdwn", "text": (
        "*Taken over* by <@U9> at <!date^1800000000^{date_short_pretty} at {time}|2027-01-15 08:00 UTC>")}]}
    assert "taken over by <@U9>" in decided["text"]
    closed = blocks.packet_message(PACKET, thread_id="abc", origin_channel="C1", closed="resolved elsewhere")
    assert all(b["type"] != "actions" for b in closed["blocks"])


def test_the_edit_modal_is_prefilled_with_the_draft():
    view = blocks.edit_modal("Draft [1].", '{"channel": "C", "ts": "1.2"}')
    assert view["callback_id"] == blocks.EDIT_MODAL and view["private_metadata"] == '{"channel": "C", "ts": "1.2"}'
    element = view["blocks"][0]["element"]
    assert view["blocks"][0]["block_id"] == blocks.EDIT_BLOCK and element["action_id"] == blocks.EDIT_INPUT
    assert element["initial_value"] == "Draft [1]." and element["multiline"] is True
    assert len(view["title"]["text"]) <= 24  # Slack's limit for a modal title
    assert "initial_value" not in blocks.edit_modal("", "{}")["blocks"][0]["element"]


# ---- store --------------------------------------------------------------------------------------------------
def test_store_claims_each_key_once_and_remembers_across_instances(tmp_path):
    store = SlackStore(tmp_path / "slack.sqlite")
    assert store.claim("event:Ev1") and not store.claim("event:Ev1") and store.claim("event:Ev2")
    store.save_conversation("C1", "1.1", "thread-a")
    again = SlackStore(tmp_path / "slack.sqlite")
    assert not again.claim("event:Ev1")
    assert again.conversation("C1", "1.1") == "thread-a" and again.conversation("C1", "1.2") is None
    again.forget_conversation("C1", "1.1")
    assert store.conversation("C1", "1.1") is None


def test_store_decides_a_packet_once(tmp_path):
    store = SlackStore(tmp_path / "slack.sqlite")
    assert store.claim_decision("CR", "9.9", user="U1", action="approve") == (False, None)
    store.save_packet(channel="CR", ts="9.9", thread_id="t", origin_channel="C1", origin_thread_ts="1.1",
                      packet=PACKET)
    won, record = store.claim_decision("CR", "9.9", user="U1", action="approve", at=100.0)
    assert won and record.decided
    assert (record.decided_by, record.decided_action, record.decided_at) == ("U1", "approve", 100.0)
    assert record.packet == PACKET and (record.origin_channel, record.origin_thread_ts) == ("C1", "1.1")
    lost, record = store.claim_decision("CR", "9.9", user="U2", action="reject")
    assert not lost and record.decided_by == "U1"
    store.release_decision("CR", "9.9")
    assert store.claim_decision("CR", "9.9", user="U2", action="reject")[0]


# ---- text ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("<@UBOT> is hail covered?", "is hail covered?"),
    ("<@UBOT|domainroute>   is   hail &amp; wind covered &lt;roof&gt;?", "is hail & wind covered <roof>?"),
    ("ask <@U123> about <#C999|claims> and <https://example.com|the page>", "ask @U123 about #claims and the page"),
    ("<@UBOT>", ""),
])
def test_clean_text(text, expected):
    assert clean_text(text, "UBOT") == expected


# ---- settings and the command -------------------------------------------------------------------------------
def test_settings_read_slacks_names_and_say_what_is_missing(monkeypatch):
    for name in SLACK_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOT_TOKEN", "not-this-one")
    assert SlackSettings().missing() == ["SLACK_BOT_TOKEN", "DOMAINROUTE_SLACK_ESCALATION_CHANNEL",
                                         "SLACK_SIGNING_SECRET"]
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("DOMAINROUTE_SLACK_ESCALATION_CHANNEL", " C0123ABCD ")
    settings = SlackSettings()
    assert settings.bot_token.get_secret_value() == "xoxb-1" and settings.escalation_channel == "C0123ABCD"
    assert settings.missing() == ["SLACK_SIGNING_SECRET"]
    assert SlackSettings(socket_mode=True).missing() == ["SLACK_APP_TOKEN"]
    assert "xoxb-1" not in repr(settings)
    with pytest.raises(ValueError, match="channel ID"):
        SlackSettings(escalation_channel="claims review")


def test_slack_command_without_secrets_exits_2_with_one_line(monkeypatch, tmp_path, capsys):
    for name in SLACK_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    code = main(["slack", "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("domainroute: error: missing DOMAINROUTE_SLACK_ESCALATION_CHANNEL, SLACK_SIGNING_SECRET")
    assert not (tmp_path / "data").exists()
    assert main(["slack", "--socket-mode", "--data-dir", str(tmp_path / "data")]) == 2
    assert "SLACK_APP_TOKEN" in capsys.readouterr().err


# ---- the manifest -------------------------------------------------------------------------------------------
def test_the_manifest_asks_for_what_the_bot_handles():
    manifest = yaml.safe_load((ROOT / "deploy" / "slack-manifest.yml").read_text())
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "app_mentions:read", "chat:write", "im:history", "im:read", "channels:history", "groups:history"}
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert set(events) == {"app_mention", "message.im", "message.channels", "message.groups"}
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    for url in (manifest["settings"]["event_subscriptions"]["request_url"],
                manifest["settings"]["interactivity"]["request_url"]):
        assert url == "https://YOUR-HOST.example.com/slack/events"
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True  # people can DM the bot
