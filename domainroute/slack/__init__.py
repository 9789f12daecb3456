"""The Slack bot (``domainroute slack``): answers mentions and direct messages in threads with citations, and
posts escalations with Approve / Edit / Take over buttons that resume the paused graph.

Needs the ``slack`` extra (``pip install 'domainroute[slack]'``). Import the parts from their modules:
``domainroute.slack.app`` (``create_slack_app``, ``SlackBot``), ``.settings`` (``SlackSettings``), ``.server``,
``.blocks``, ``.store``.
"""
