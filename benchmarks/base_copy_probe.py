"""How well does a base model quote the passage? Teacher-forced answer tokens of held-out grounded-QA examples.

The examples are made exactly like the pretraining QA examples of ``domainroute train-base`` (agents/base_model.py:
numbered passages, a question, an answer that quotes the gold passage and cites it) but with another seed, so the
question phrasings and passage mixes are new; the documents are the same knowledge base, so a model can score well
by memorising the documents as well as by copying from the prompt. Reported: answer-token accuracy (argmax = the
reference token) and mean answer-token loss, for each base model folder given, side by side in one run; and the
same on copies of the examples whose numbers are replaced by random ones (``perturb_numbers``), which memorising the
documents cannot predict: only copying from the prompt gets those numbers right.

With ``--adapter`` (one per ``--base``, trained on that base) it also scores, on a domain's validation split of the
adapter data (never test), the base alone and base + adapter with free greedy decoding, through the same code as
``domainroute adapters eval`` (adapters/evaluate.run_condition): terminology, ROUGE-L, faithfulness, states figures.

Run:  .venv/bin/python benchmarks/base_copy_probe.py [--base DIR [--adapter DIR]] ... [--domain billing] [--n 240]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def held_out_examples(kb_dir: Path, n: int, seed: int, *, perturbed: bool = False) -> list[dict]:
    from domainroute.agents.base_model import BaseModelConfig, build_examples
    from domainroute.retrievers.ingest import load_chunks

    cfg = BaseModelConfig(qa_per_chunk=2, seed=seed, perturb_numbers=1.0 if perturbed else 0.0)
    examples = build_examples(load_chunks(kb_dir), cfg)
    return [e for e in examples if e["kind"] == "qa" and e["k"] >= 2][:n]


def probe(base: Path, examples: list[dict], *, batch_size: int = 24) -> dict[str, float]:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from domainroute.agents.base_model import _encode

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = LlamaForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    encoded = [_encode(e, tokenizer, 384) for e in examples]
    right = total = 0
    nll = 0.0
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            batch = encoded[i: i + batch_size]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id)
            labels = torch.full((len(batch), width), -100)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (a, b) in enumerate(batch):
                ids[row, : len(a)], labels[row, : len(b)], mask[row, : len(a)] = torch.tensor(a), torch.tensor(b), 1
            logits = model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1]
            target = labels[:, 1:]
            keep = target != -100
            right += int(((logits.argmax(-1) == target) & keep).sum())
            total += int(keep.sum())
            nll += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
    return {"answer_token_accuracy": round(right / total, 3), "answer_token_loss": round(nll / total, 3),
            "answer_tokens": total}


def adapter_rows(base: Path, adapter: Path, domain: str, threads: int) -> list[tuple[str, dict]]:
    from domainroute.adapters.dataset import data_path, load_examples
    from domainroute.adapters.evaluate import _chunks, run_condition
    from domainroute.agents.local_engine import LocalChatModel

    pack = ROOT / "domainroute/packs/insurance"
    engine = LocalChatModel(model_path=base, adapters={"probe": adapter}, torch_threads=threads)
    examples = load_examples(data_path(pack / "adapters/data", domain), "validation")
    chunks = _chunks(pack / "kb")
    return [(name, run_condition(engine, domain, examples, chunks, adapter_id=aid, condition=name).summary())
            for name, aid in (("base", None), ("base + adapter", "probe"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", action="append", type=Path,
                        help="base model folder (repeatable; default: the bundled domainroute/models/base)")
    parser.add_argument("--adapter", action="append", type=Path,
                        help="adapter folder trained on the matching --base (give one per --base, in order)")
    parser.add_argument("--domain", default="billing", help="the adapters' domain (default billing)")
    parser.add_argument("--kb", type=Path, default=ROOT / "domainroute/packs/insurance/kb")
    parser.add_argument("--n", type=int, default=240, help="held-out examples (default 240)")
    parser.add_argument("--seed", type=int, default=99, help="seed of the held-out examples (pretraining uses 1234)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    bases = args.base or [ROOT / "domainroute/models/base"]
    for base in bases:
        if not (base / "config.json").exists():
            print(f"error: {base} is not a model folder (no config.json)", file=sys.stderr)
            return 2
    if args.adapter and len(args.adapter) != len(bases):
        print("error: give one --adapter per --base, in the same order", file=sys.stderr)
        return 2
    examples = held_out_examples(args.kb, args.n, args.seed)
    perturbed = held_out_examples(args.kb, args.n, args.seed, perturbed=True)
    print(f"{len(examples)} held-out QA examples (seed {args.seed}, 2-3 passages each)\n")
    print("| base model | answer-token accuracy | answer-token loss | numbers perturbed: accuracy | loss | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for base in bases:
        start = time.perf_counter()
        plain, other = probe(base, examples), probe(base, perturbed)
        print(f"| {base} | {plain['answer_token_accuracy']:.3f} | {plain['answer_token_loss']:.3f} | "
              f"{other['answer_token_accuracy']:.3f} | {other['answer_token_loss']:.3f} | "
              f"{time.perf_counter() - start:.1f} |")
    if args.adapter:
        print(f"\n{args.domain} validation split, free greedy decoding\n")
        print("| base model | condition | n | compliance | terminology | ROUGE-L | faithfulness | states figures |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for base, adapter in zip(bases, args.adapter, strict=True):
            for name, r in adapter_rows(base, adapter, args.domain, args.threads):
                print(f"| {base} | {name} | {r['n']} | {r['compliance']:.3f} | {r['terminology']:.3f} | "
                      f"{r['rouge_l']:.3f} | {r['faithfulness']:.3f} | {r['states_figures']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
