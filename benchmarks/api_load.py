"""Load on the claims API: N concurrent conversations of T turns each against a local server.

Checks that no thread is crossed (every answer names the thread it was sent to, and each thread's checkpointed
customer messages are exactly that conversation's queries, in order) or lost (every thread has all its turns),
and reports throughput and p50/p95 turn latency. Writes docs/benchmarks/api.md.

    .venv/bin/python benchmarks/api_load.py                        # 50 x 5 on the real embedded service
    .venv/bin/python benchmarks/api_load.py --conversations 5 --turns 2 --engine fake   # the API alone, fake model

--engine real (default) builds AgentService from Settings on a data dir (the knowledge base is ingested into a
fresh temporary one unless --data-dir names one that has it); --engine fake uses the unit-test fakes
(tests/fakes.py) and so measures only HTTP, auth, SQLite and checkpoint overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]

from domainroute.api.app import create_app  # noqa: E402
from domainroute.api.keys import KeyStore  # noqa: E402
from domainroute.api.ratelimit import RateLimit  # noqa: E402
from domainroute.api.server import background_server  # noqa: E402
from domainroute.client import AsyncClient  # noqa: E402
from domainroute.service import AgentService  # noqa: E402
from domainroute.settings import Settings  # noqa: E402

QUERIES = [
    "someone backed into my parked car, is that collision?", "is windshield chip repair free?",
    "how long can I keep a rental car after an accident", "a pipe burst and flooded the basement",
    "hail damaged my roof shingles", "where do we stay while the house is repaired",
    "do I need prior authorization for an MRI", "what does my EOB mean", "when is my premium due",
    "why was I charged a late fee", "how do I set up autopay", "can I get a refund if I cancel",
]
TENANTS = ("northwind", "harbor")


@dataclass
class Conversation:
    index: int
    tenant: str
    thread_id: str = ""
    sent: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    crossed: int = 0
    resumed: int = 0
    errors: list[str] = field(default_factory=list)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def build_service(engine: str, data_dir: Path | None) -> tuple[AgentService, str]:
    if engine == "fake":
        sys.path.insert(0, str(ROOT))
        from domainroute.pack import load_pack
        from tests.fakes import KeywordRouter, ListRetriever, ScriptedChatModel, WordPolicy, passage, served_adapters

        settings = Settings(data_dir=Path(tempfile.mkdtemp()))
        retriever = ListRetriever([passage("auto-glass@v1#000", "Glass chip repair has a $0 deductible."),
                                   passage("harbor-glass@v1#000", "Harbor glass repair costs $50.", tenant="harbor")])
        service = AgentService(settings, adapters=served_adapters(load_pack(settings.pack_dir)), retriever=retriever,
                               chat_model=ScriptedChatModel(replies=["Chip repair is free [1]."], calls=[]),
                               router=KeywordRouter({"car": "auto", "glass": "auto", "pipe": "home", "roof": "home"}),
                               escalation_policy=WordPolicy({"lawyer": "legal"}))
        return service, "fake components (tests/fakes.py): API, HTTP, SQLite and checkpoint overhead only"
    if data_dir is None:
        from domainroute.retrievers import configured_retriever
        from domainroute.retrievers.ingest import ingest

        data_dir = Path(tempfile.mkdtemp(prefix="api-load-"))
        settings = Settings(data_dir=data_dir)
        ingest(settings.kb_dir, configured_retriever(settings), progress=True)
    settings = Settings(data_dir=data_dir)
    label = (f"real embedded service ({settings.llm_backend} model {settings.base_model_path.name}, "
             f"{settings.retriever_backend}, SQLite checkpoints)")
    return AgentService(settings), label


async def converse(url: str, keys: dict[str, str], conv: Conversation, turns: int) -> None:
    async with AsyncClient(url, keys[conv.tenant], timeout=1800, retries=0) as client:
        conv.thread_id = (await client.create_thread()).thread_id
        for turn in range(turns):
            query = QUERIES[(conv.index + turn) % len(QUERIES)]
            start = time.perf_counter()
            try:
                result = await client.ask(conv.thread_id, query)
            except Exception as exc:  # noqa: BLE001 - a benchmark counts failures instead of stopping at the first
                conv.errors.append(f"turn {turn}: {type(exc).__name__}: {exc}")
                continue
            conv.latencies.append(time.perf_counter() - start)
            conv.sent.append(query)
            conv.crossed += result.thread_id != conv.thread_id
            if result.status == "awaiting_human":  # the policy escalated: a reviewer approves so the talk goes on
                await client.resume(conv.thread_id, "approve", reviewer="load-test")
                conv.resumed += 1


def check_threads(service: AgentService | None, url: str, keys: dict[str, str],
                  convs: list[Conversation]) -> tuple[int, int]:
    """(crossed, lost): threads whose checkpointed customer messages are not exactly theirs, or are missing turns."""
    import httpx

    crossed = lost = 0
    for conv in convs:
        info = httpx.get(f"{url}/v1/threads/{conv.thread_id}", timeout=60,
                         headers={"Authorization": f"Bearer {keys[conv.tenant]}"}).json()
        lost += info["turns"] != len(conv.sent)
        if service is not None:
            values = service.graph.get_state({"configurable": {"thread_id": conv.thread_id}}).values
            humans = [m.text for m in values.get("messages", []) if m.type == "human"]
            crossed += humans != conv.sent
    return crossed, lost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--engine", choices=["real", "fake"], default="real")
    parser.add_argument("--data-dir", type=Path, help="a data dir with the knowledge base ingested (real engine)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "api.md")
    args = parser.parse_args(argv)

    service, label = build_service(args.engine, args.data_dir)
    keys_dir = Path(tempfile.mkdtemp(prefix="api-load-keys-"))
    store = KeyStore.in_dir(keys_dir)
    keys = {tenant: store.create(tenant)[0] for tenant in TENANTS}
    app = create_app(service, store, rate_limit=RateLimit(rate=0))
    convs = [Conversation(i, TENANTS[i % len(TENANTS)]) for i in range(args.conversations)]
    with background_server(app, lifetime_s=3 * 3600) as url:
        import httpx

        start = time.perf_counter()
        ready = httpx.get(f"{url}/readyz", timeout=600)
        warm_s = time.perf_counter() - start
        if ready.status_code != 200:
            print(f"not ready: {ready.text}", file=sys.stderr)
            return 1

        async def run_all() -> None:
            await asyncio.gather(*(converse(url, keys, conv, args.turns) for conv in convs))

        start = time.perf_counter()
        asyncio.run(run_all())
        wall = time.perf_counter() - start
        crossed_state, lost = check_threads(service, url, keys, convs)

    latencies = [x for c in convs for x in c.latencies]
    errors = [e for c in convs for e in c.errors]
    crossed = sum(c.crossed for c in convs) + crossed_state
    rows = {
        "engine": label,
        "conversations x turns": f"{args.conversations} x {args.turns} (tenants {', '.join(TENANTS)} alternating)",
        "turns answered": f"{len(latencies)} of {args.conversations * args.turns}",
        "failed requests": str(len(errors)),
        "escalations resumed by the load test": str(sum(c.resumed for c in convs)),
        "crossed threads": str(crossed),
        "lost threads (turn count wrong)": str(lost),
        "wall time": f"{wall:.1f} s (after warm-up: readiness took {warm_s:.1f} s)",
        "throughput": f"{len(latencies) / wall:.2f} turns/s",
        "turn latency p50 / p95 / max": f"{pct(latencies, 0.5):.2f} / {pct(latencies, 0.95):.2f} / "
                                        f"{max(latencies, default=float('nan')):.2f} s",
        "mean service time per turn": f"{wall / max(1, len(latencies)):.2f} s (turns run one at a time per process)",
    }
    command = "python benchmarks/api_load.py " + " ".join(argv if argv is not None else sys.argv[1:])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = ["# Claims API under load", "", f"Command: `{command.strip()}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; {when}", "",
             "| measure | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows.items()], "",
             "Latency is client-side, per `POST /v1/threads/{id}/messages` (JSON). Turns are serialized per process "
             "(one CPU model), so with many concurrent conversations latency is mostly queueing: p50 grows with the "
             "number of conversations while throughput stays at 1 / service time. A turn the escalation policy "
             "pauses is resumed (`approve`) by the load test before the conversation goes on; those resume calls are "
             "in the wall time but not in the turn count or the latencies.", ""]
    if errors:
        lines += ["First failures:", "", *[f"- {e}" for e in errors[:10]], ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if not errors and not crossed and not lost else 1


if __name__ == "__main__":
    sys.exit(main())
