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


class OperationRefused(FailoverBotError):
    """A drain or drill may not proceed (or a click came too late); the message says why."""


class SchemaOutOfDate(FailoverBotError):
    """The database schema is older than the code."""


class ProviderError(FailoverBotError):
    """The load balancer's API failed; the message says what happened in an operator's words."""


class ProviderAuthError(ProviderError):
    """The API token was rejected, or lacks a permission."""


class ProviderNotFound(ProviderError):
    """An account, zone, pool or load balancer the bot was told about does not exist."""


class ProviderRateLimited(ProviderError):
    """The API kept answering 429 after the client's retries."""


class ProviderUnavailable(ProviderError):
    """The API could not be reached, timed out, or kept failing (5xx)."""


class ProviderRejected(ProviderError):
    """The API refused the request as malformed (4xx other than auth and 429)."""
