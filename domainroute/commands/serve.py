"""``domainroute serve``: the claims API (FastAPI on uvicorn; OpenAPI at /docs)."""

from __future__ import annotations

import argparse
import sys

from domainroute.errors import InputError


def cmd_serve(args: argparse.Namespace) -> int:
    from domainroute.api.app import create_app
    from domainroute.api.keys import KeyStore
    from domainroute.api.ratelimit import RateLimit
    from domainroute.api.server import serve
    from domainroute.cli import _settings
    from domainroute.service import AgentService

    if not 0 < args.port < 65536:
        raise InputError(f"--port must be 1-65535, got {args.port}")
    if args.max_body_kb < 1:
        raise InputError(f"--max-body-kb must be >= 1, got {args.max_body_kb}")
    try:
        limit = RateLimit(rate=args.rate, burst=args.burst)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    settings = _settings(args)
    keys = KeyStore.in_dir(settings.data_dir)
    if not keys.list():
        print(f"domainroute: no API keys in {keys.path} yet; every /v1 call will answer 401. Create one with:\n"
              f"  domainroute keys create TENANT --data-dir {settings.data_dir}", file=sys.stderr)
    app = create_app(AgentService(settings), keys, rate_limit=limit, max_body_bytes=args.max_body_kb * 1024)
    print(f"domainroute: serving on http://{args.host}:{args.port} (OpenAPI at /docs, readiness at /readyz); "
          f"data in {settings.data_dir}", file=sys.stderr)
    serve(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def register(add) -> None:
    p = add("serve", cmd_serve,
            "Serve the claims API: threads, messages (JSON or server-sent events), escalations and resume, with "
            "per-tenant API keys (see: domainroute keys create). OpenAPI docs at /docs.",
            "domainroute keys create northwind && domainroute serve --host 127.0.0.1 --port 8000")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--rate", type=float, default=5.0,
                   help="requests per second each key may make on average (default 5; 0 = no limit)")
    p.add_argument("--burst", type=int, default=20, help="requests each key may make back to back (default 20)")
    p.add_argument("--max-body-kb", dest="max_body_kb", type=int, default=64,
                   help="largest request body in KiB; larger ones get 413 (default 64)")
    p.add_argument("--log-level", dest="log_level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"], help="uvicorn log level")
