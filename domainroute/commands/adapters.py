"""``domainroute adapters build-data | train DOMAIN | list | eval``: the domain LoRA adapters of a pack."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from domainroute.errors import InputError

ACTIONS = ("train", "list", "eval", "build-data")


def _settings(args: argparse.Namespace):
    from domainroute.cli import _settings as settings_from_args

    return settings_from_args(args)


def _config(args: argparse.Namespace):
    from domainroute.adapters.train import AdapterTrainConfig

    values: dict[str, Any] = {}
    for flag, name in (("rank", "r"), ("alpha", "alpha"), ("dropout", "dropout"), ("lr", "learning_rate"),
                       ("epochs", "epochs"), ("batch_size", "batch_size"), ("seed", "seed"),
                       ("max_seq_len", "max_seq_len"), ("threads", "threads")):
        value = getattr(args, flag, None)
        if value is not None:
            values[name] = value
    if args.target_modules:
        values["target_modules"] = tuple(m.strip() for m in args.target_modules.split(",") if m.strip())
    try:
        return AdapterTrainConfig(**values)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def _train(args: argparse.Namespace) -> int:
    from domainroute.adapters.dataset import data_path
    from domainroute.adapters.templates import DOMAINS
    from domainroute.adapters.train import adapter_id_for, train_adapter

    if args.domain not in DOMAINS:
        raise InputError(f"unknown domain {args.domain!r}; known: {', '.join(DOMAINS)} "
                         "(example: domainroute adapters train auto)")
    settings = _settings(args)
    cfg = _config(args)
    data = Path(args.data) if args.data else data_path(settings.adapters_dir / "data", args.domain)
    out = Path(args.out) if args.out else settings.adapters_dir / adapter_id_for(args.domain)
    manifest = train_adapter(args.domain, settings.base_model_path, data, out, cfg, kb_dir=settings.kb_dir,
                             max_steps=args.max_steps, evaluate_test=not args.no_eval, fresh=args.fresh)
    print(json.dumps({"adapter_id": manifest["adapter_id"], "training": {
        k: manifest["training"][k] for k in ("steps", "first_loss", "final_loss", "validation_loss", "seconds_this_run")},
        "metrics": manifest["metrics"]}, indent=2))
    print(f"saved to {out}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from domainroute.adapters.registry import base_weights_sha256, scan

    settings = _settings(args)
    entries = scan(settings.adapters_dir)
    base_sha = base_weights_sha256(settings.base_model_path) if (settings.base_model_path / "config.json").exists() else ""
    rows = [{
        "adapter_id": e.adapter_id, "domain": e.domain, "path": str(e.path),
        "base_model": e.manifest.get("base_model", {}).get("name", ""),
        "base_sha256": e.base_sha256, "matches_loaded_base": bool(base_sha) and e.base_sha256 == base_sha,
        "metrics": e.manifest.get("metrics", {}), "created": e.manifest.get("created", ""),
        "command": e.manifest.get("command", ""),
    } for e in entries.values()]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    if not rows:
        print(f"no adapters in {settings.adapters_dir}; train one with `domainroute adapters train auto`")
        return 0
    for row in rows:
        m = row["metrics"]
        figures = (f"compliance {m['compliance']:.2f}  terms {m['terminology']:.2f}  ROUGE-L {m['rouge_l']:.2f}  "
                   f"faithful {m['faithfulness']:.2f}" if "compliance" in m else "no test metrics")
        match = "base ok" if row["matches_loaded_base"] else "BASE MISMATCH" if base_sha else "base not built"
        print(f"{row['adapter_id']:<20} {row['domain']:<8} {match:<13} {figures}  ({row['created']})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from domainroute.adapters.evaluate import evaluate_all, markdown_table, verdicts
    from domainroute.adapters.registry import verified_adapters
    from domainroute.adapters.templates import DOMAINS

    settings = _settings(args)
    domains = args.domains.split(",") if args.domains else list(DOMAINS)
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise InputError(f"unknown domain(s) {', '.join(unknown)}; known: {', '.join(DOMAINS)}")
    adapters = {a: e.path for a, e in verified_adapters(settings.adapters_dir, settings.base_model_path).items()}
    results = evaluate_all(settings.base_model_path, adapters, settings.adapters_dir / "data", settings.kb_dir,
                           domains=domains, split=args.split, limit=args.limit, threads=args.threads or 1)
    verdict = verdicts(results)
    if args.json:
        print(json.dumps({"results": [r.summary() for r in results], **verdict}))
    else:
        print(markdown_table(results))
        for domain, ok in verdict["own_beats_base"].items():
            yes = {name: "yes" if by_domain.get(domain) else "no" for name, by_domain in verdict.items()}
            print(f"{domain}: own adapter beats base on all four quality figures (a tie is not a win): free decoding "
                  f"{'yes' if ok else 'no'}, copy-constrained {yes['own_beats_base_copy_constrained']}, "
                  f"copy+quote {yes['own_beats_base_quote_constrained']} "
                  f"({yes['own_beats_base_quote_constrained_ceiling_ties']} counting ties at 1.00)")
    return 0


def _build_data(args: argparse.Namespace) -> int:
    from domainroute.adapters.dataset import build_datasets, refresh_answers

    settings = _settings(args)
    if args.answers_only:
        print(json.dumps(refresh_answers(settings.kb_dir, settings.adapters_dir / "data")))
        return 0
    counts = build_datasets(settings.kb_dir, settings.pack_dir / "router" / "queries.jsonl",
                            settings.adapters_dir / "data", per_domain=args.per_domain)
    print(json.dumps(counts))
    return 0


def cmd_adapters(args: argparse.Namespace) -> int:
    if args.action == "train" and not args.domain:
        raise InputError("adapters train needs a DOMAIN, e.g. `domainroute adapters train auto`")
    if args.action != "train" and args.domain:
        raise InputError(f"adapters {args.action} takes no DOMAIN (got {args.domain!r}); use --domains for eval")
    return {"train": _train, "list": _list, "eval": _eval, "build-data": _build_data}[args.action](args)


def register(add) -> None:
    p = add("adapters", cmd_adapters,
            "Domain LoRA adapters: build-data (training data from the KB), train DOMAIN, list, eval (base vs "
            "own vs wrong adapter on the test split).",
            "domainroute adapters train auto --epochs 3\n  domainroute adapters list --json\n"
            "  domainroute adapters eval --limit 20")
    p.add_argument("action", choices=ACTIONS, help="train | list | eval | build-data")
    p.add_argument("domain", nargs="?", help="for train: auto | home | health | billing")
    p.add_argument("--base-model", dest="base_model_path", type=Path,
                   help="Hugging Face causal LM folder (default: the bundled base model)")
    train = p.add_argument_group("train")
    train.add_argument("--epochs", type=int, help="passes over the train split (default 3)")
    train.add_argument("--lr", type=float, help="peak learning rate (default 6e-3)")
    train.add_argument("--batch-size", dest="batch_size", type=int, help="examples per step (default 4)")
    train.add_argument("--seed", type=int, help="seed for initialisation, dropout and data order (default 1234)")
    train.add_argument("--max-seq-len", dest="max_seq_len", type=int, help="longest training sequence (default 512)")
    train.add_argument("--rank", type=int, help="LoRA rank r (default 16)")
    train.add_argument("--alpha", type=int, help="LoRA alpha (default 32)")
    train.add_argument("--dropout", type=float, help="LoRA dropout (default 0.05)")
    train.add_argument("--target-modules", dest="target_modules", help="comma-separated (default q_proj,v_proj)")
    train.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    train.add_argument("--data", help="training data JSONL (default: <pack>/adapters/data/DOMAIN.jsonl)")
    train.add_argument("--out", help="adapter folder (default: <pack>/adapters/insurance-DOMAIN)")
    train.add_argument("--max-steps", dest="max_steps", type=int, help="stop after this many steps (smoke runs)")
    train.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint instead of resuming")
    train.add_argument("--no-eval", dest="no_eval", action="store_true",
                       help="skip generating the test split for the manifest's metrics")
    other = p.add_argument_group("list / eval / build-data")
    other.add_argument("--json", action="store_true", help="print JSON instead of text")
    other.add_argument("--domains", help="eval: comma-separated domains (default: all four)")
    other.add_argument("--split", default="test", choices=["train", "validation", "test"], help="eval split")
    other.add_argument("--limit", type=int, help="eval: first N examples per domain (default: all)")
    other.add_argument("--per-domain", dest="per_domain", type=int, default=330,
                       help="build-data: examples per domain (default 330)")
    other.add_argument("--answers-only", dest="answers_only", action="store_true",
                       help="build-data: rewrite the reference answers from the stored passages (no retrieval)")
