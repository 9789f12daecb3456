"""Optional CLI subcommands, one module each, discovered by ``domainroute.cli``.

A module here defines ``register(add)``; ``add(name, func, help, example)`` returns an argparse sub-parser (with
the common --data-dir/--pack/--tenant flags) whose ``func(args) -> int`` runs the command. Raise
``domainroute.errors.InputError`` for bad input (exit 2) and other ``DomainRouteError``s for failures (exit 1).
"""
