"""Issue-3 figures in one run: graph overhead per turn, end-to-end ask latency, cold start, base model size and
generation speed. Run: .venv/bin/python benchmarks/agent_bench.py  (writes docs/benchmarks/agent.md)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402

from domainroute.retrievers import configured_retriever  # noqa: E402
from domainroute.retrievers.ingest import ingest  # noqa: E402
from domainroute.service import AgentService  # noqa: E402
from domainroute.settings import Settings  # noqa: E402

QUERIES = [
    "someone backed into my parked car, is that collision?", "is windshield chip repair free?",
    "how long can I keep a rental car after an accident", "my car was stolen from the driveway",
    "a pipe burst and flooded the basement", "hail damaged my roof shingles", "do renters policies cover theft from my car",
    "where do we stay while the house is repaired", "do I need prior authorization for an MRI", "what does my EOB mean",
    "is my specialist copay different out of network", "how do I appeal a denied physical therapy claim",
    "when is my premium due", "why was I charged a late fee", "how do I set up autopay", "can I get a refund if I cancel",
    "what's the weather tomorrow", "give me a lasagna recipe", "write a haiku about cats", "who won the 1998 world cup",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Timed:
    """Wraps a component and adds up the seconds spent in it."""

    def __init__(self, inner, method: str):
        self.inner, self.method, self.seconds = inner, method, 0.0

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


class ModelTimer(BaseCallbackHandler):
    """Seconds and tokens the chat model spends, measured by LangChain callbacks inside the real turn."""

    def __init__(self):
        self.seconds, self.tokens, self._start = 0.0, 0, 0.0

    def on_chat_model_start(self, *args, **kwargs):
        self._start = time.perf_counter()

    def on_llm_end(self, response, **kwargs):
        self.seconds += time.perf_counter() - self._start
        self.tokens += response.generations[0][0].message.response_metadata.get("generated_tokens", 0)


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="dr-bench-"))
    settings = Settings(data_dir=data)
    ingest(settings.kb_dir, configured_retriever(settings), progress=False)

    env = {**os.environ, "DOMAINROUTE_DATA_DIR": str(data)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "domainroute.cli", "ask", "is hail damage to my roof covered?", "--json"],
                         capture_output=True, env=env, check=True)
    cold = time.perf_counter() - start
    json.loads(out.stdout)

    base = AgentService(settings)
    model = base.chat_model
    model.load()
    retriever = Timed(base.retriever, "search")
    timer = ModelTimer()
    chat = model.model_copy(update={"callbacks": [timer]})
    service = AgentService(settings, retriever=retriever, chat_model=chat)
    # Out-of-scope queries never call the model; in-scope model time is measured below on the same prompts.
    service.ask("warm up the encoder and the model")

    overhead, total, model_s, retrieval_s = [], [], [], []
    for query in QUERIES:
        retriever.seconds, timer.seconds = 0.0, 0.0
        t0 = time.perf_counter()
        service.ask(query)
        elapsed = time.perf_counter() - t0
        total.append(elapsed)
        retrieval_s.append(retriever.seconds)
        model_s.append(timer.seconds)
        overhead.append(max(0.0, elapsed - retriever.seconds - timer.seconds))
    gen_tokens, gen_seconds = timer.tokens, sum(model_s)

    weights = Path(settings.base_model_path) / "model.safetensors"
    manifest = json.loads((Path(settings.base_model_path) / "manifest.json").read_text())
    rows = [
        ("graph overhead per turn, excl. model + retrieval (p50 / p95)",
         f"{pct(overhead, .5) * 1000:.1f} ms / {pct(overhead, .95) * 1000:.1f} ms"),
        ("retrieval per turn incl. query embedding (p50)", f"{pct([r for r in retrieval_s if r], .5) * 1000:.1f} ms"),
        ("end-to-end ask, in process (p50 / p95)", f"{pct(total, .5):.2f} s / {pct(total, .95):.2f} s"),
        ("cold start: `domainroute ask --json` as a new process", f"{cold:.1f} s"),
        ("base model", f"{manifest['parameters'] / 1e6:.1f}M parameters, {weights.stat().st_size / 1e6:.1f} MB (fp16)"),
        ("generation incl. prompt prefill, batch 1, greedy", f"{gen_tokens / gen_seconds:.0f} tokens/s"),
    ]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    note = (f"\n\n{len(QUERIES)} queries (16 in-scope, 4 out of scope), one turn each, on {os.cpu_count()} CPU cores, "
            f"torch threads {settings.torch_threads}, max_new_tokens {settings.max_new_tokens}. Overhead = turn wall "
            "time minus model generation minus retrieval (router, escalation policy, graph and SQLite checkpoints "
            "remain in it).\n")
    out_path = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "agent.md"
    out_path.write_text("# Agent: latency and model figures\n\nCommand: `.venv/bin/python benchmarks/agent_bench.py`\n\n"
                        + table + note)
    print(table + note)


if __name__ == "__main__":
    main()
