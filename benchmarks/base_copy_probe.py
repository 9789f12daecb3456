"""How well does a base model quote the passage? Teacher-forced answer tokens of grounded-QA examples.

The examples are made like the pretraining QA examples of ``domainroute train-base`` (agents/base_model.py: numbered
passages, a question, an answer that quotes the gold passage and cites it) with another seed. They are not unseen
text: the questions come from the same templates and the answers quote the same documents, so most answers (and
some questions) appear word for word in the pretraining corpus, and a model can score well by memorising the
documents. The "numbers perturbed" columns score the *same* examples with every number in the passages and answer
replaced consistently by a random one (citation markers and 19xx/20xx years kept): memorisation cannot predict
those, only copying from the prompt can (except the kept years and the few numbers a random draw leaves
unchanged: about 3 % of their number tokens, a floor that memorising alone reaches). Reported per base model
folder, side by side in one run: accuracy (argmax = the reference token) and mean loss over all answer tokens, and
accuracy over the answer tokens that contain a digit (numbers; citation markers excluded). Examples longer than 384 tokens are cut from the left, as in training.

With ``--adapter`` (one per ``--base``, trained on that base) it also scores, on a domain's validation split of the
adapter data (never test), the base alone and base + adapter with free greedy decoding, through the same code as
``domainroute adapters eval`` (adapters/evaluate.evaluate_split): terminology, ROUGE-L, faithfulness, the share of
answers stating a figure, and faithfulness among those (an answer with no figure is faithful by default).

Run:  .venv/bin/python benchmarks/base_copy_probe.py [--base DIR [--adapter DIR]] ... [--domain billing] [--n 240]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "domainroute/packs/insurance"  # the adapter data and knowledge base of the bundled pack


def perturbed_copy(example: dict, rng: random.Random) -> dict:
    """The example with the numbers of its prompt and answer replaced consistently (``number_perturber``: citation
    markers and 19xx/20xx years kept), so the answer still quotes the (perturbed) passage."""
    from domainroute.agents.base_model import number_perturber

    perturb = number_perturber(rng)
    return {**example, "prompt": perturb(example["prompt"]), "answer": perturb(example["answer"])}


def qa_examples(kb_dir: Path, n: int, seed: int) -> list[dict]:
    from domainroute.agents.base_model import BaseModelConfig, build_examples
    from domainroute.retrievers.ingest import load_chunks

    examples = build_examples(load_chunks(kb_dir), BaseModelConfig(qa_per_chunk=2, seed=seed))
    return [e for e in examples if e["kind"] == "qa" and e["k"] >= 2][:n]


def probe(base: Path, examples: list[dict], *, batch_size: int = 24) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from domainroute.agents.base_model import _encode

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [_encode(e, tokenizer, 384) for e in examples]
    # answer tokens that carry a number: a digit, and not the n of a citation marker "[n]" (after a "[" token)
    vocabulary = [t or "" for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]
    digit_token = torch.tensor([any(ch.isdigit() for ch in t) for t in vocabulary])
    bracket_token = torch.tensor([t.endswith("[") for t in vocabulary])
    right = total = number_right = numbers = 0
    nll = 0.0
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            batch = encoded[i: i + batch_size]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad)
            labels = torch.full((len(batch), width), -100)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (a, b) in enumerate(batch):
                ids[row, : len(a)], labels[row, : len(b)], mask[row, : len(a)] = torch.tensor(a), torch.tensor(b), 1
            logits = model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1]
            target = labels[:, 1:]
            keep = target != -100
            hit = (logits.argmax(-1) == target) & keep
            right += int(hit.sum())
            total += int(keep.sum())
            is_number = keep & digit_token[target.clamp(min=0)] & ~bracket_token[ids[:, :-1]]
            number_right += int((hit & is_number).sum())
            numbers += int(is_number.sum())
            nll += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
    return {"answer_token_accuracy": round(right / total, 3), "answer_token_loss": round(nll / total, 3),
            "number_token_accuracy": round(number_right / numbers, 3) if numbers else 0.0,
            "answer_tokens": total, "number_tokens": numbers}


def adapter_rows(base: Path, adapter: Path, domain: str, threads: int) -> list[tuple[str, dict]]:
    from domainroute.adapters.dataset import data_path
    from domainroute.adapters.evaluate import evaluate_split

    return [(name, evaluate_split(domain, base, data_path(PACK / "adapters/data", domain), adapters={"probe": adapter},
                                  adapter_id=aid, kb_dir=PACK / "kb", split="validation", threads=threads))
            for name, aid in (("base", None), ("base + adapter", "probe"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", action="append", type=Path,
                        help="base model folder (repeatable; default: the bundled domainroute/models/base)")
    parser.add_argument("--adapter", action="append", type=Path,
                        help="adapter folder trained on the matching --base (give one per --base, in order)")
    parser.add_argument("--domain", default="billing", help="the adapters' domain (default billing)")
    parser.add_argument("--kb", type=Path, default=PACK / "kb", help="knowledge base of the QA examples")
    parser.add_argument("--n", type=int, default=240, help="QA examples (default 240)")
    parser.add_argument("--seed", type=int, default=99, help="seed of the QA examples (pretraining uses 1234)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    bases = args.base or [ROOT / "domainroute/models/base"]
    for base in bases:
        if not (base / "config.json").exists():
            print(f"error: {base} is not a model folder (no config.json)", file=sys.stderr)
            return 2
    if args.n < 1:
        print("error: --n must be at least 1", file=sys.stderr)
        return 2
    if args.adapter:
        if len(args.adapter) != len(bases):
            print("error: give one --adapter per --base, in the same order", file=sys.stderr)
            return 2
        for adapter in args.adapter:
            if not (adapter / "adapter_config.json").exists():
                print(f"error: {adapter} is not an adapter folder (no adapter_config.json)", file=sys.stderr)
                return 2
        if not (PACK / "adapters/data" / f"{args.domain}.jsonl").exists():
            print(f"error: no adapter data for domain {args.domain!r} in {PACK / 'adapters/data'}", file=sys.stderr)
            return 2
    examples = qa_examples(args.kb, args.n, args.seed)
    rng = random.Random(args.seed)
    perturbed = [perturbed_copy(e, rng) for e in examples]
    print(f"{len(examples)} QA examples (seed {args.seed}, 2-3 passages each); the same examples with numbers perturbed\n")
    print("| base model | answer-token accuracy | loss | number-token accuracy | numbers perturbed: answer-token "
          "accuracy | loss | number-token accuracy | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for base in bases:
        start = time.perf_counter()
        plain, other = probe(base, examples), probe(base, perturbed)
        print(f"| {base} | {plain['answer_token_accuracy']:.3f} | {plain['answer_token_loss']:.3f} | "
              f"{plain['number_token_accuracy']:.3f} | {other['answer_token_accuracy']:.3f} | "
              f"{other['answer_token_loss']:.3f} | {other['number_token_accuracy']:.3f} | "
              f"{time.perf_counter() - start:.1f} |")
    if args.adapter:
        print(f"\n{args.domain} validation split, free greedy decoding\n")
        print("| base model | condition | n | compliance | terminology | ROUGE-L | faithfulness | states figures | "
              "faithful when stating figures |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for base, adapter in zip(bases, args.adapter, strict=True):
            for name, r in adapter_rows(base, adapter, args.domain, args.threads):
                print(f"| {base} | {name} | {r['n']} | {r['compliance']:.3f} | {r['terminology']:.3f} | "
                      f"{r['rouge_l']:.3f} | {r['faithfulness']:.3f} | {r['states_figures']:.3f} | "
                      f"{r['faithful_with_figures']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
