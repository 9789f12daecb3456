"""``domainroute keys``: create, list and revoke the claims API's per-tenant keys."""

from __future__ import annotations

import argparse
import json
import sys

from domainroute.errors import InputError


def cmd_keys(args: argparse.Namespace) -> int:
    from domainroute.api.keys import KeyStore
    from domainroute.cli import _settings

    store = KeyStore.in_dir(_settings(args).data_dir)
    if args.action == "create":
        if not args.target:
            raise InputError("give the tenant: domainroute keys create TENANT")
        key, record = store.create(args.target, role=args.role, name=args.name)
        if args.json:
            print(json.dumps({"key": key, "key_id": record.key_id, "tenant": record.tenant, "role": record.role}))
        else:
            print(key)
        print(f"domainroute: key {record.key_id} for tenant {record.tenant!r} (role {record.role}) stored hashed in "
              f"{store.path}; this is the only time it is shown", file=sys.stderr)
        return 0
    if args.action == "revoke":
        if not args.target:
            raise InputError("give the key id: domainroute keys revoke KEY_ID (see: domainroute keys list)")
        record = store.revoke(args.target)
        print(f"revoked key {record.key_id} (tenant {record.tenant!r})")
        return 0
    keys = store.list()
    if args.json:
        print(json.dumps([{"key_id": k.key_id, "tenant": k.tenant, "role": k.role, "name": k.name,
                           "created_at": k.created_at, "revoked_at": k.revoked_at} for k in keys]))
    elif not keys:
        print(f"no keys in {store.path}; create one with: domainroute keys create TENANT")
    else:
        for k in keys:
            state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
            print(f"{k.key_id}  tenant={k.tenant}  role={k.role}  created={k.created_at}  {state}"
                  + (f"  name={k.name}" if k.name else ""))
    return 0


def register(add) -> None:
    from domainroute.api.keys import ROLES

    p = add("keys", cmd_keys,
            "Manage the claims API's keys: 'create TENANT' prints a new key once (only its salted hash is stored), "
            "'list' shows key ids, 'revoke KEY_ID' disables one.",
            "domainroute keys create northwind --role full")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("target", nargs="?", help="create: the tenant (letters, digits, '-', '_'); revoke: the key id")
    p.add_argument("--role", choices=ROLES, default="full",
                   help="full: everything; ask: threads and messages; review: escalations and resume (default full)")
    p.add_argument("--name", help="a label for the key, e.g. the system that uses it")
    p.add_argument("--json", action="store_true", help="print JSON")
