"""The Slack bot's settings: the app's secrets and the escalation channel.

Precedence: explicit argument > environment. The environment names are Slack's usual ones
(``SLACK_BOT_TOKEN``, ``SLACK_SIGNING_SECRET``, ``SLACK_APP_TOKEN``) plus ``DOMAINROUTE_SLACK_ESCALATION_CHANNEL``.
Secrets never come from the TOML config file, so they cannot be committed with it.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domainroute.errors import InputError

# Where each secret comes from, said once, so the CLI's error line and the docs name the same things.
WHERE = {
    "SLACK_BOT_TOKEN": "OAuth & Permissions > Bot User OAuth Token (xoxb-...)",
    "SLACK_SIGNING_SECRET": "Basic Information > App Credentials > Signing Secret",
    "SLACK_APP_TOKEN": "Basic Information > App-Level Tokens, scope connections:write (xapp-...)",
    "DOMAINROUTE_SLACK_ESCALATION_CHANNEL": "the ID of the channel reviewers watch, e.g. C0123ABCD (invite the bot)",
}


class SlackSettings(BaseSettings):
    """What the Slack bot is configured with. Read once at the boundary (``domainroute slack``)."""

    # case_sensitive: only the upper-case names above are read from the environment (not, say, BOT_TOKEN).
    model_config = SettingsConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True,
                                      case_sensitive=True)

    bot_token: SecretStr | None = Field(None, validation_alias="SLACK_BOT_TOKEN", description="xoxb- bot token.")
    signing_secret: SecretStr | None = Field(None, validation_alias="SLACK_SIGNING_SECRET",
                                             description="Verifies that HTTP requests come from Slack.")
    app_token: SecretStr | None = Field(None, validation_alias="SLACK_APP_TOKEN",
                                        description="xapp- app-level token, for Socket Mode only.")
    escalation_channel: str | None = Field(None, validation_alias="DOMAINROUTE_SLACK_ESCALATION_CHANNEL",
                                           description="Channel where escalation packets are posted for review.")
    socket_mode: bool = Field(False, description="Receive events over a WebSocket instead of HTTP requests.")
    listener_threads: int = Field(8, ge=1, le=64, description="Threads that acknowledge and queue Slack requests.")

    @field_validator("escalation_channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"escalation channel must be a channel ID like C0123ABCD, got {value!r}")
        return value

    def missing(self) -> list[str]:
        """Environment names of the values this mode needs and does not have."""
        needed = {
            "SLACK_BOT_TOKEN": self.bot_token,
            "DOMAINROUTE_SLACK_ESCALATION_CHANNEL": self.escalation_channel,
        }
        if self.socket_mode:
            needed["SLACK_APP_TOKEN"] = self.app_token
        else:
            needed["SLACK_SIGNING_SECRET"] = self.signing_secret
        return [name for name, value in needed.items() if not value or not _secret(value)]

    def require(self) -> None:
        """Raise InputError naming every missing value and where to find it, in one line."""
        missing = self.missing()
        if missing:
            where = "; ".join(f"{name}: {WHERE[name]}" for name in missing)
            raise InputError(f"missing {', '.join(missing)} (set them in the environment; {where}; see docs/slack.md)")
        if self.app_token and not _secret(self.app_token).startswith("xapp-") and self.socket_mode:
            raise InputError("SLACK_APP_TOKEN must be an app-level token starting with xapp- (Socket Mode)")


def _secret(value: SecretStr | str) -> str:
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return text.strip()
