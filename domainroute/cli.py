"""The ``domainroute`` command line. Every command has ``--help``; bad input exits 2 with one clear line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from domainroute.errors import DomainRouteError, InputError

EXIT_INPUT = 2
EXIT_BACKEND = 1

EPILOG = """\
quick start (embedded defaults, no servers needed):
  domainroute ingest                       # load the bundled knowledge base into the local LanceDB store
  domainroute ask "is windshield repair covered?" --json

settings come from (highest first): command-line flags > DOMAINROUTE_* environment variables >
a TOML config file ($DOMAINROUTE_CONFIG or ./domainroute.toml) > defaults. Data lives in ~/.domainroute
unless DOMAINROUTE_DATA_DIR says otherwise.
"""


def _settings(args: argparse.Namespace):
    from domainroute.settings import Settings

    overrides: dict[str, Any] = {}
    for field in ("data_dir", "pack_dir", "tenant", "base_model_path"):
        value = getattr(args, field, None)
        if value is not None:
            overrides[field] = value
    return Settings(**overrides)


def _service(args: argparse.Namespace):
    from domainroute.service import AgentService

    return AgentService(_settings(args))


def _emit(obj: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    if as_json:
        print(json.dumps(obj, ensure_ascii=False))
    else:
        print(human(obj))


def _human_result(result: dict[str, Any]) -> str:
    lines = [result["answer"], ""]
    for n, c in enumerate(result["citations"], start=1):
        lines.append(f"[{n}] {c['title']} ({c['chunk_id']})")
    lines.append(f"route: {result['route']} ({result['confidence']:.2f})  adapter: {result['adapter'] or 'base'}  "
                 f"status: {result['status']}  thread: {result['thread_id']}")
    esc = result.get("escalation")
    if esc and esc["escalate"]:
        lines.append(f"escalated to a human: {', '.join(esc['reasons'])}  "
                     f"(resume with: domainroute resume {result['thread_id']} --decision approve|edit|reject)")
    return "\n".join(lines)


def _parse_claim(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        claim = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--claim is not valid JSON: {exc.msg} at character {exc.pos}") from exc
    if claim is not None and not isinstance(claim, dict):
        raise InputError("--claim must be a JSON object like "
                         '{"line": "auto", "amount": 1200, "policy_age_days": 400, "prior_claims_12m": 0, "contacts_on_claim": 1}')
    return claim


def cmd_ask(args: argparse.Namespace) -> int:
    claim = _parse_claim(args.claim)
    from domainroute.schemas import Query

    try:  # validate before anything loads or is written
        Query(query=args.query, claim=claim)
    except ValueError as exc:
        from domainroute.service import _first_error

        raise InputError(_first_error(exc)) from exc
    result = _service(args).ask(args.query, claim, thread_id=args.thread).model_dump()
    _emit(result, args.json, _human_result)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    decision = {"action": args.decision, "text": args.text, "reviewer": args.reviewer}
    result = _service(args).resume(args.thread_id, decision).model_dump()
    _emit(result, args.json, _human_result)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from domainroute.retrievers import configured_retriever
    from domainroute.retrievers.ingest import ingest

    settings = _settings(args)
    path = Path(args.path) if args.path else settings.kb_dir
    retriever = configured_retriever(settings)
    report = ingest(path, retriever, progress=not args.quiet)
    where = settings.store_path if settings.retriever_backend == "lancedb" else settings.weaviate_url
    print(f"ingested {report.documents} documents, {report.chunks} chunks, tenants: {', '.join(report.tenants)} -> {where}")
    return 0


def cmd_train_base(args: argparse.Namespace) -> int:
    from domainroute.agents.base_model import BaseModelConfig, train_base
    from domainroute.settings import BUNDLED_BASE_MODEL

    settings = _settings(args)
    try:
        cfg = BaseModelConfig(steps=args.steps, hidden_size=args.hidden_size, num_layers=args.layers,
                              num_heads=args.heads, intermediate_size=args.intermediate_size, seed=args.seed,
                              batch_size=args.batch_size, threads=args.threads, max_seq_len=args.max_seq_len,
                              perturb_numbers=args.perturb_numbers)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    out = Path(args.out) if args.out else BUNDLED_BASE_MODEL
    manifest = train_base(settings.kb_dir, out, cfg, progress=True)
    print(json.dumps({k: manifest[k] for k in ("parameters", "steps", "tokens_seen", "final_loss", "train_seconds",
                                               "weights_sha256")}, indent=2))
    print(f"saved to {out}")
    return 0


def _jsonl_lines(stream) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object or an InputError) for each non-blank line of a binary stream."""
    for number, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, InputError("line is not valid UTF-8")
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, InputError(f"not valid JSON ({exc.msg})")
            continue
        if not isinstance(obj, dict):
            yield number, InputError("each line must be a JSON object")
            continue
        yield number, obj


def _run_jsonl(handle: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """One output line per input line; a bad line gets {"error": ...} and the batch goes on; exit 2 if any failed."""
    failed = 0
    for number, item in _jsonl_lines(sys.stdin.buffer):
        try:
            if isinstance(item, InputError):
                raise item
            out = handle(item)
        except InputError as exc:
            failed += 1
            out = {"error": f"line {number}: {exc}"}
            print(f"domainroute: line {number}: {exc}", file=sys.stderr)
        sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    return EXIT_INPUT if failed else 0


def _require(item: dict[str, Any], key: str) -> None:
    """The contract's field must be there; other top-level fields (an evaluation harness's "id" or "label")
    are ignored, never echoed: the output keys stay exactly the contract's."""
    if key not in item:
        hint = f" (fields given: {sorted(item)[:5]})" if item else ""
        raise InputError(f"missing {key!r}{hint}")


def cmd_route(args: argparse.Namespace) -> int:
    service = _service(args)
    if not args.jsonl:
        if not args.query:
            raise InputError("give a QUERY or use --jsonl to read {\"query\": ...} lines from stdin")
        print(json.dumps(service.route_query(args.query).model_dump()))
        return 0

    def handle(item: dict[str, Any]) -> dict[str, Any]:
        _require(item, "query")
        if not isinstance(item["query"], str):
            raise InputError("query must be a string")
        return service.route_query(item["query"]).model_dump()

    return _run_jsonl(handle)


def _say(message: str) -> None:
    """A progress line on stderr (stdout stays the command's JSON)."""
    print(f"domainroute: {message}", file=sys.stderr, flush=True)


def cmd_escalation(args: argparse.Namespace) -> int:
    service = _service(args)
    if args.action == "retrain":
        from domainroute.agents.escalation import retrain

        result = retrain(service.settings.pack_dir, progress=_say)
        print(json.dumps(result if isinstance(result, dict) else getattr(result, "__dict__", str(result)),
                         indent=2, default=str))
        return 0
    if not args.jsonl:
        raise InputError("use --jsonl to read {\"query\": ..., \"claim\": ...} lines from stdin, or 'retrain'")

    def handle(item: dict[str, Any]) -> dict[str, Any]:
        _require(item, "query")
        if not isinstance(item["query"], str):
            raise InputError("query must be a string")
        claim = item.get("claim")
        if claim is not None and not isinstance(claim, dict):
            raise InputError("claim must be an object or null")
        return service.escalation_decision(item["query"], claim).model_dump()

    return _run_jsonl(handle)


def cmd_escalations(args: argparse.Namespace) -> int:
    paused = _service(args).paused_threads()
    if args.json:
        print(json.dumps(paused, default=str))
    elif not paused:
        print("no conversations are waiting for a human")
    else:
        for item in paused:
            packet = item["packet"]
            print(f"{item['thread_id']}  route={packet.get('route')}  reasons={','.join(packet.get('reasons', []))}  "
                  f"query={packet.get('query', '')[:80]!r}")
    return 0


def cmd_router(args: argparse.Namespace) -> int:
    from domainroute.agents import router as router_mod

    settings = _settings(args)
    if args.action == "train":
        manifest = router_mod.train_router(settings.pack_dir, second_stage=not args.no_second_stage, progress=_say)
        print(json.dumps(manifest.get("test_metrics", manifest), indent=2, default=str))
        return 0
    from domainroute.pack import load_pack

    model = router_mod.load_router(settings.router_dir, load_pack(settings.pack_dir))
    metrics = router_mod.evaluate_split(model, settings.pack_dir, args.split)
    print(json.dumps(metrics, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="domainroute",
        description="Route each question to a domain, answer it with that domain's adapter and cited policy "
                    "documents, and hand it to a human when it should be.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", dest="data_dir", type=Path, help="where the store and checkpoints live")
    common.add_argument("--pack", dest="pack_dir", type=Path, help="domain pack folder (default: bundled insurance)")
    common.add_argument("--tenant", help="tenant whose documents may be retrieved (default: northwind)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = add("ask", cmd_ask, "Ask one question; starts a conversation or continues one with --thread.",
            "domainroute ask \"my car was hit in a parking lot\" --claim '{\"line\": \"auto\", \"amount\": 1200, "
            "\"policy_age_days\": 400, \"prior_claims_12m\": 0, \"contacts_on_claim\": 1}' --json")
    p.add_argument("query", help="the question, in quotes")
    p.add_argument("--claim", help="the claim as JSON: line (auto|home|health), amount, policy_age_days, "
                                   "prior_claims_12m, contacts_on_claim")
    p.add_argument("--thread", help="continue this conversation (the thread_id printed by an earlier ask)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    p = add("resume", cmd_resume, "Give the human decision for a conversation paused for review.",
            "domainroute resume 3f2a... --decision edit --text \"We will call you today.\"")
    p.add_argument("thread_id", help="the paused conversation (see: domainroute escalations list)")
    p.add_argument("--decision", required=True, choices=["approve", "edit", "reject"],
                   help="approve: send the draft; edit: send --text instead; reject: take the case over")
    p.add_argument("--text", help="the answer to send (required with edit; optional with reject)")
    p.add_argument("--reviewer", help="who decided (recorded with the decision)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    p = add("ingest", cmd_ingest, "Chunk, embed and store knowledge-base documents (re-ingesting replaces, never duplicates).",
            "domainroute ingest domainroute/packs/insurance/kb")
    p.add_argument("path", nargs="?", help="a Markdown document or a folder of them (default: the pack's kb/)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("train-base", cmd_train_base, "Pretrain the small bundled base model from the pack's knowledge base.",
            "domainroute train-base")
    p.add_argument("--out", help="output folder (default: the bundled model folder)")
    p.add_argument("--steps", type=int, default=900, help="optimizer steps (default 900, ~20 min on 2 cores)")
    p.add_argument("--hidden-size", type=int, default=192)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate-size", type=int, default=576)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest on a busy 2-core machine; use all cores when idle)")
    p.add_argument("--max-seq-len", dest="max_seq_len", type=int, default=384, help="training sequence length")
    p.add_argument("--perturb-numbers", dest="perturb_numbers", type=float, default=0.0,
                   help="share of QA examples whose numbers are replaced by random ones, so the model learns to copy "
                        "figures from the passage rather than recall them (0 to 1, default 0)")

    p = add("route", cmd_route, "Route queries: one QUERY, or --jsonl reads {\"query\": str} lines from stdin and "
            "writes {\"route\", \"confidence\"} lines.", "echo '{\"query\": \"hail hit my roof\"}' | domainroute route --jsonl")
    p.add_argument("query", nargs="?", help="a single query (omit with --jsonl)")
    p.add_argument("--jsonl", action="store_true", help="read JSON lines from stdin, write one JSON line each")

    p = add("escalation", cmd_escalation, "Escalation decisions: --jsonl reads {\"query\", \"claim\"} lines and writes "
            "{\"escalate\", \"score\", \"reasons\"}; 'retrain' learns from the decision log.",
            "echo '{\"query\": \"my lawyer will call you\", \"claim\": null}' | domainroute escalation --jsonl")
    p.add_argument("action", nargs="?", choices=["retrain"], help="retrain: train a new version from the decision log")
    p.add_argument("--jsonl", action="store_true", help="read JSON lines from stdin, write one JSON line each")

    p = add("escalations", cmd_escalations, "List conversations waiting for a human decision.",
            "domainroute escalations list")
    p.add_argument("action", nargs="?", choices=["list"], default="list")
    p.add_argument("--json", action="store_true")

    p = add("router", cmd_router, "Train or evaluate the learned router on the pack's labelled queries.",
            "domainroute router train")
    p.add_argument("action", choices=["train", "eval"])
    p.add_argument("--split", default="test", choices=["train", "validation", "test"], help="split for eval")
    p.add_argument("--no-second-stage", action="store_true",
                   help="train: skip the second stage (all-mpnet-base-v2 + MiniLM for queries the first stage is "
                        "unsure of); one encoder, faster, less accurate")

    import importlib
    import pkgutil

    from domainroute import commands

    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"domainroute.commands.{module_info.name}").register(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"domainroute: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except DomainRouteError as exc:
        print(f"domainroute: error: {exc}", file=sys.stderr)
        return EXIT_BACKEND
    except KeyboardInterrupt:
        print("domainroute: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
