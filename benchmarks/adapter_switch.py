"""Embedded-engine parity with TGI's multi-LoRA serving: adapter switch cost and mixed-adapter batches.

1. ``set_adapter`` switch cost: median milliseconds over many switches between the four domain adapters.
2. A batch of 8 requests that use different adapters (the four domain adapters, and the base model as
   ``None`` -> peft's ``__base__``) generated in one ``generate_texts`` call (peft ``adapter_names``), vs the same 8
   requests as 8 sequential single calls. The outputs are compared row by row; the speedup is reported.

Run:  .venv/bin/python benchmarks/adapter_switch.py [--repeats 3] [--threads 1]   (writes docs/benchmarks/adapter_switch.md)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from langchain_core.messages import HumanMessage, SystemMessage  # noqa: E402

from domainroute.adapters.dataset import data_path, load_examples, passages_for  # noqa: E402
from domainroute.adapters.registry import verified_adapters  # noqa: E402
from domainroute.agents.local_engine import LocalChatModel  # noqa: E402
from domainroute.graphs.prompts import SYSTEM_PROMPT, user_prompt  # noqa: E402
from domainroute.retrievers.ingest import load_chunks  # noqa: E402
from domainroute.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MIX = ["insurance-auto", "insurance-home", "insurance-health", "insurance-billing", None,
       "insurance-auto", "insurance-health", "insurance-billing"]


def mixed_batch(settings: Settings, engine: LocalChatModel) -> tuple[list[str], list[str | None]]:
    """8 test-split prompts; each request's adapter is its own domain's (or None for the base model)."""
    chunks = {c.chunk_id: c for c in load_chunks(settings.kb_dir)}
    prompts, used = [], {}
    for adapter_id in MIX:
        domain = (adapter_id or "insurance-auto").removeprefix("insurance-")
        examples = load_examples(data_path(settings.adapters_dir / "data", domain), "test")
        example = examples[used.get(domain, 0)]
        used[domain] = used.get(domain, 0) + 1
        passages = passages_for(example, chunks)
        prompts.append(engine.prompt_text([SystemMessage(SYSTEM_PROMPT),
                                           HumanMessage(user_prompt(example["query"], passages))]))
    return prompts, list(MIX)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions of batch and sequential runs")
    parser.add_argument("--switches", type=int, default=400, help="set_adapter calls to time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=80)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "adapter_switch.md")
    args = parser.parse_args()

    settings = Settings()
    adapters = {a: e.path for a, e in verified_adapters(settings.adapters_dir, settings.base_model_path).items()}
    engine = LocalChatModel(model_path=settings.base_model_path, adapters=adapters, torch_threads=args.threads)
    loaded = engine.load()
    ids = sorted(adapters)

    switch_ms = []
    for i in range(args.switches):
        start = time.perf_counter()
        loaded.model.set_adapter(ids[i % len(ids)])
        switch_ms.append((time.perf_counter() - start) * 1000)

    prompts, adapter_ids = mixed_batch(settings, engine)
    engine.generate_texts(prompts[:1], adapter_ids=adapter_ids[:1], max_new_tokens=4)  # warm-up
    batch_s, seq_s, batch_out, seq_out = [], [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        batch_out = engine.generate_texts(prompts, adapter_ids=adapter_ids, max_new_tokens=args.max_new_tokens)
        batch_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        seq_out = [engine.generate_texts([p], adapter_ids=[a], max_new_tokens=args.max_new_tokens)[0]
                   for p, a in zip(prompts, adapter_ids, strict=True)]
        seq_s.append(time.perf_counter() - start)
    same = [b == s for b, s in zip(batch_out, seq_out, strict=True)]
    tokens = sum(len(loaded.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in batch_out)
    b, s = statistics.median(batch_s), statistics.median(seq_s)

    lines = [
        "# Adapter switching and mixed-adapter batches (embedded engine)",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()} CPU, torch threads "
        f"{args.threads}, {len(ids)} adapters loaded on the bundled base model, greedy decoding, "
        f"max {args.max_new_tokens} new tokens.",
        "",
        f"Command: `.venv/bin/python benchmarks/adapter_switch.py --repeats {args.repeats} --threads {args.threads}`",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| `set_adapter` switch, median over {args.switches} switches | {statistics.median(switch_ms):.3f} ms |",
        f"| `set_adapter` switch, p95 | {sorted(switch_ms)[int(0.95 * (len(switch_ms) - 1))]:.3f} ms |",
        f"| mixed batch of 8 in one call (median of {args.repeats}) | {b:.2f} s |",
        f"| the same 8 as sequential single calls (median of {args.repeats}) | {s:.2f} s |",
        f"| speedup | {s / b:.2f}x |",
        f"| rows whose batch output equals the sequential output | {sum(same)} / {len(same)} |",
        f"| tokens generated by the batch | {tokens} ({tokens / b:.0f} tokens/s batched) |",
        "",
        "Adapters per row: " + ", ".join(a or "base" for a in adapter_ids)
        + " (four adapters plus the base model; peft runs the rows of one forward pass through their own LoRA "
        "weights via `adapter_names`).",
    ]
    if not all(same):
        lines += ["", "Rows that differ (batch vs sequential):", ""]
        for i, ok in enumerate(same):
            if not ok:
                lines += [f"- row {i} ({adapter_ids[i] or 'base'}): batch `{batch_out[i][:120]!r}` vs sequential "
                          f"`{seq_out[i][:120]!r}`"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
