"""``domainroute slack``: run the Slack bot (HTTP with signature verification, or Socket Mode)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from domainroute.errors import ConfigError, InputError

HELP = ("Run the Slack bot: answers @mentions and direct messages in threads with cited sources, and posts "
        "escalations to a review channel with Approve / Edit / Take over buttons. Needs SLACK_BOT_TOKEN, "
        "SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN with --socket-mode) and DOMAINROUTE_SLACK_ESCALATION_CHANNEL "
        "in the environment; install the app from deploy/slack-manifest.yml first (docs/slack.md).")
EXAMPLE = ("export SLACK_BOT_TOKEN=xoxb-... SLACK_SIGNING_SECRET=... DOMAINROUTE_SLACK_ESCALATION_CHANNEL=C0123ABCD\n"
           "  domainroute slack --port 3000      # Slack's Request URL: https://<your host>/slack/events")


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("slack", cmd_slack, HELP, EXAMPLE)
    p.add_argument("--port", type=int, default=3000, help="HTTP port for Slack's requests (default 3000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1, behind your TLS proxy; 0.0.0.0 for all)")
    p.add_argument("--socket-mode", action="store_true",
                   help="receive events over a WebSocket (needs SLACK_APP_TOKEN, xapp-...); no public URL needed")


def cmd_slack(args: argparse.Namespace) -> int:
    from domainroute.cli import _settings

    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be between 1 and 65535, got {args.port}")
    from domainroute.slack.settings import SlackSettings

    try:
        slack_settings = SlackSettings(socket_mode=args.socket_mode)
    except ValueError as exc:
        raise InputError(str(exc).splitlines()[-1].strip()) from exc
    slack_settings.require()
    settings = _settings(args)  # validate everything before anything loads or is written
    try:
        from slack_bolt.error import BoltError

        from domainroute.slack.app import SlackBot
    except ImportError as exc:
        raise ConfigError(f"the Slack bot needs the slack extra: pip install 'domainroute[slack]' ({exc})") from exc
    from domainroute.service import AgentService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("domainroute.slack")
    log.info("loading the agent (model, router, escalation policy, retriever)")
    service = AgentService(settings)
    service.context  # noqa: B018 - load every component now: a broken setup fails here, not on the first mention
    service.graph  # noqa: B018
    try:
        bot = SlackBot(service, slack_settings)
    except BoltError as exc:
        raise ConfigError(f"Slack did not accept SLACK_BOT_TOKEN: {exc}") from exc
    try:
        if args.socket_mode:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            app_token = slack_settings.app_token.get_secret_value() if slack_settings.app_token else ""
            log.info("connecting to Slack in Socket Mode; escalations go to %s", slack_settings.escalation_channel)
            SocketModeHandler(bot.app, app_token).start()
        else:
            from domainroute.slack.server import SlackHTTPServer

            try:
                server = SlackHTTPServer(bot.app, host=args.host, port=args.port)
            except OSError as exc:
                raise InputError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from exc
            print(f"domainroute slack: listening on {server.url} (escalations go to "
                  f"{slack_settings.escalation_channel}); Ctrl-C stops", file=sys.stderr, flush=True)
            try:
                server.serve_forever(poll_interval=0.5)
            finally:
                server.server_close()
    finally:
        bot.close(timeout=30)
    return 0
