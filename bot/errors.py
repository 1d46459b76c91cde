"""Errors the bot raises on purpose: each carries a message fit to show an operator."""


class FailoverBotError(Exception):
    """Base of the errors whose message is meant for a person."""


class ConfigError(FailoverBotError):
    """A setting or the topology file is missing or malformed; the message names it."""


class UsageError(FailoverBotError):
    """A command was typed wrong; the message says what was wrong and ``usage`` what is right."""

    def __init__(self, message: str, usage: str | None = None) -> None:
        super().__init__(message)
        self.usage = usage


class SchemaOutOfDate(FailoverBotError):
    """The database schema is older than the code."""
