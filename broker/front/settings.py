"""The HTTP front's limits, from ``DRBROKER_HTTP_*`` environment variables (docs/configuration.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from broker.app import MAX_BODY_BYTES
from broker.config import env_float

__all__ = ["LINGER_SECONDS", "MAX_BODY_BYTES", "MAX_HEADER_BYTES", "MAX_TARGET_BYTES", "FrontSettings"]

# MAX_BODY_BYTES is the app's: the front refuses a larger body before it has read it all, with the same 413.
# Long enough for any OSB request: a 255-character id, percent-encoded three times over, is under 1 KiB; a
# 4,000-character id must still reach the app for its own 400 that names the id.
MAX_TARGET_BYTES = 8 * 1024
# The request line and every header together. An IBM IAM bearer token is a few KiB.
MAX_HEADER_BYTES = 64 * 1024
# After an error answer the front keeps reading (and discarding) what the client still sends, at most this
# long, so that closing does not reset the connection before the client has read the answer.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class FrontSettings:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    connection_limit: int = 1000
    threads: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FrontSettings:
        env = os.environ if env is None else env
        return cls(
            header_timeout=_positive(env, "DRBROKER_HTTP_HEADER_TIMEOUT", cls.header_timeout),
            body_timeout=_positive(env, "DRBROKER_HTTP_BODY_TIMEOUT", cls.body_timeout),
            keepalive_timeout=_positive(env, "DRBROKER_HTTP_KEEPALIVE_TIMEOUT", cls.keepalive_timeout),
            connection_limit=_whole(env, "DRBROKER_HTTP_CONNECTION_LIMIT", cls.connection_limit),
            threads=_whole(env, "DRBROKER_HTTP_THREADS", cls.threads),
        )


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = env_float(env, name, default)
    if not value > 0:
        raise SystemExit(f"{name}={env.get(name)!r} must be greater than 0")
    return value


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    value = env_float(env, name, default)
    if value != int(value) or value < 1:
        raise SystemExit(f"{name}={env.get(name)!r} must be a whole number of at least 1")
    return int(value)
