"""Slack ack latency under load: bursts of 20 concurrent signed app_mention events sent to the real bolt app on
127.0.0.1 (Web API calls go to a local stand-in for Slack), measuring how long each HTTP acknowledgement takes (Slack
allows 3 s) and how long until each answer is posted.

The agent is the real graph with SQLite checkpoints on the fakes of tests/fakes.py, with a chat model that sleeps
``--agent-seconds`` per answer to stand in for a slow model (the ack must not wait for it); ``--real`` uses the
real AgentService instead (needs the trained base model and an ingested ``--data-dir``).

Run: .venv/bin/python benchmarks/slack_ack.py  (about 40 s; writes docs/benchmarks/slack.md)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.slack_support / tests.fakes
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.fakes import ScriptedChatModel  # noqa: E402
from tests.slack_support import BotHarness, fake_service, mention  # noqa: E402

QUESTIONS = ["is glass chip repair covered?", "how long is the rental car covered?", "a pipe burst in my kitchen",
             "is windshield glass covered after hail?", "does rental reimbursement have a daily limit?"]


class SleepyModel(ScriptedChatModel):
    """The scripted fake, plus a fixed delay per answer standing in for model latency."""

    delay: float = 0.25

    def _generate(self, *args, **kwargs):
        time.sleep(self.delay)
        return super()._generate(*args, **kwargs)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def burst(h: BotHarness, size: int) -> tuple[list[float], list[int], list[float]]:
    """``size`` events at once; (ack seconds, HTTP statuses, seconds until each answer was posted)."""
    events = [mention(QUESTIONS[i % len(QUESTIONS)]) for i in range(size)]
    start_line = threading.Barrier(size)
    sent_at: dict[str, float] = {}

    def send(event):
        start_line.wait()
        sent_at[event["ts"]] = time.perf_counter()
        return h.send_event(event, wait=False)

    with ThreadPoolExecutor(max_workers=size) as pool:
        replies = list(pool.map(send, events))
    if not h.bot.wait_idle(600):
        raise SystemExit("the bot did not finish the burst within 600 s")
    answered = {c.params["thread_ts"]: c.at for c in h.api.of("chat.postMessage")
                if c.params.get("thread_ts") in sent_at}
    missing = [e["ts"] for e in events if e["ts"] not in answered]
    if missing:
        raise SystemExit(f"{len(missing)} events of the burst were not answered")
    return ([r.seconds for r in replies], [r.status for r in replies],
            [answered[e["ts"]] - sent_at[e["ts"]] for e in events])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=20, help="events per burst (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="bursts (default 5)")
    parser.add_argument("--agent-seconds", type=float, default=0.25, help="simulated model time per answer")
    parser.add_argument("--real", action="store_true", help="use the real AgentService (model + --data-dir)")
    parser.add_argument("--data-dir", type=Path, help="ingested data dir for --real")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "slack.md")
    args = parser.parse_args()
    if args.concurrency < 1 or args.rounds < 1 or args.agent_seconds < 0:
        parser.error("--concurrency and --rounds must be >= 1, --agent-seconds >= 0")
    if args.real and args.data_dir is None:
        parser.error("--real needs --data-dir (a data dir where `domainroute ingest` has run)")

    with tempfile.TemporaryDirectory() as tmp:
        if args.real:
            from domainroute.service import AgentService
            from domainroute.settings import Settings

            service = AgentService(Settings(data_dir=args.data_dir))
            agent = "real AgentService (bundled model, LanceDB)"
        else:
            service = fake_service(Path(tmp) / "data",
                                   chat_model=SleepyModel(replies=["Chip repair is free [1]."], calls=[],
                                                          delay=args.agent_seconds))
            agent = f"graph + SQLite on fakes, {args.agent_seconds:.2f} s simulated model time per answer"
        load_before = os.getloadavg()
        acks: list[float] = []
        statuses: list[int] = []
        answers: list[float] = []
        with BotHarness(service) as h:
            burst(h, 1)  # warm-up: first graph compile, SQLite files, the listener pool
            wall = time.perf_counter()
            for n in range(args.rounds):
                a, s, t = burst(h, args.concurrency)
                acks += a
                statuses += s
                answers += t
                print(f"burst {n + 1}/{args.rounds}: ack p50 {statistics.median(a) * 1000:.1f} ms, "
                      f"max {max(a) * 1000:.1f} ms; last answer after {max(t):.2f} s", flush=True)
            wall = time.perf_counter() - wall
        load_after = os.getloadavg()

    ms = [x * 1000 for x in acks]
    bad = sum(s != 200 for s in statuses)
    over = sum(x > 3.0 for x in acks)
    command = "`" + " ".join([".venv/bin/python benchmarks/slack_ack.py", *sys.argv[1:]]) + "`"
    text = f"""# Slack bot: acknowledgement latency

Command: {command}

Setup: the real bolt app (`domainroute.slack.app.SlackBot`, `process_before_response=False`) behind
`domainroute.slack.server.SlackHTTPServer` on 127.0.0.1; every request signed with the signing secret as Slack does
and verified by bolt; Web API calls to a local stand-in for Slack. Agent: {agent}; one agent worker (the service runs
one turn at a time). {args.rounds} bursts of {args.concurrency} concurrent `app_mention` events (a barrier releases
them together), after one warm-up event. The senders, the bot and the stand-in share one Python process (and its
GIL), so the figures include their contention.
Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; load average
{load_before[0]:.2f} before, {load_after[0]:.2f} after (the machine is shared).

| what | n | p50 | p95 | max |
|---|---|---|---|---|
| HTTP ack (request sent -> 200 received) | {len(ms)} | {pct(ms, 0.5):.1f} ms | {pct(ms, 0.95):.1f} ms | {max(ms):.1f} ms |
| answer posted in the thread (request sent -> chat.postMessage) | {len(answers)} | {pct(answers, 0.5):.2f} s | {pct(answers, 0.95):.2f} s | {max(answers):.2f} s |

Non-200 acks: {bad}. Acks over Slack's 3 s limit: {over}. Wall time for all bursts: {wall:.1f} s.

Reading it: the ack does not wait for the agent (the listener only de-duplicates and queues), so its latency is
signature verification + a SQLite insert + thread hand-off. Answers queue behind one another on the single agent
worker, so time-to-answer grows with the burst: about (position in queue) x (time per answer).
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
