"""Which events go where: event-type patterns, an instance's subscriptions, and their checks.

A pattern is an event type (``rehearsal.failed``), a family (``rehearsal.*``) or ``*``. A subscription
without patterns gets the default: every ``warning`` and ``critical`` event (``broker/events/types.py``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from broker.domain.errors import InvalidParameters
from broker.events.types import EVENT_TYPES

DEFAULT_SEVERITIES = ("warning", "critical")
MAX_WEBHOOKS = 5

# Plain http:// webhooks are refused unless the notifications job was configured with
# DRBROKER_WEBHOOK_ALLOW_HTTP (for tests and local receivers), and even then only to loopback. Webhooks to
# loopback, link-local (cloud metadata), private or reserved addresses are refused unless
# DRBROKER_WEBHOOK_ALLOW_PRIVATE is set: otherwise any customer could make the broker POST into its own network.
_allow_http = False
_allow_private = False


def set_policy(*, allow_http: bool, allow_private: bool) -> None:
    global _allow_http, _allow_private
    _allow_http, _allow_private = allow_http, allow_private


def is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved or ip.is_multicast or \
        ip.is_unspecified


def internal_address_problem(host: str, addresses: Iterable[str], *, allow_private: bool | None = None,
                             ) -> str | None:
    """Why the broker will not call ``host`` (which resolves to ``addresses``), or None."""
    if _allow_private if allow_private is None else allow_private:
        return None
    internal = sorted({a for a in addresses if is_internal(a)})
    if internal:
        return (f"{host} is an internal address ({', '.join(internal[:3])}); webhooks go to public addresses "
                "unless DRBROKER_WEBHOOK_ALLOW_PRIVATE is set")
    return None


def _families() -> set[str]:
    return {name.split(".", 1)[0] for name in EVENT_TYPES}


def pattern_problem(pattern: Any) -> str | None:
    """Why ``pattern`` names no event type, or None."""
    if not isinstance(pattern, str):
        return "must be an event type name"
    if pattern == "*" or pattern in EVENT_TYPES:
        return None
    if pattern.endswith(".*") and pattern[:-2] in _families():
        return None
    families = ", ".join(f"{f}.*" for f in sorted(_families()))
    return f"{pattern!r} is not an event type (names: docs/events.md; families: {families}; or *)"


def check_patterns(patterns: Iterable[Any]) -> str | None:
    for i, pattern in enumerate(patterns):
        problem = pattern_problem(pattern)
        if problem:
            return f"[{i}]: {problem}"
    return None


def matches(patterns: Sequence[str] | None, event_type: str, severity: str) -> bool:
    if not patterns:
        return severity in DEFAULT_SEVERITIES
    for p in patterns:
        if p == "*" or p == event_type or (p.endswith(".*") and event_type.startswith(p[:-1])):
            return True
    return False


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problem(url: Any, *, allow_http: bool | None = None, allow_private: bool | None = None) -> str | None:
    """Why ``url`` is not a webhook the broker will call, or None (the policy: this process's, unless given)."""
    allow_http = _allow_http if allow_http is None else allow_http
    if not isinstance(url, str):
        return "must be a URL"
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # a bad port raises here
    except ValueError:
        return "must be an https:// URL"
    if not host or parts.scheme not in ("https", "http"):
        return "must be an https:// URL"
    if parts.scheme == "http":
        if not is_loopback_host(host):
            return "must be an https:// URL (http:// only to loopback, with DRBROKER_WEBHOOK_ALLOW_HTTP)"
        if not allow_http:
            return "must be an https:// URL (this broker does not allow http://: DRBROKER_WEBHOOK_ALLOW_HTTP)"
        return None
    literal = "127.0.0.1" if host == "localhost" else host
    try:
        ipaddress.ip_address(literal)
    except ValueError:
        return None  # a name: checked when it is resolved, at each delivery
    return internal_address_problem(host, [literal], allow_private=allow_private)


def check_notification_parameters(params: Mapping[str, Any]) -> None:
    """The rules the JSON schema cannot say: event types that exist, webhook URLs the broker may call, one
    subscription per URL. Raises InvalidParameters naming the field."""
    problem = check_patterns(params.get("notify_event_types") or ())
    if problem:
        raise InvalidParameters(f"parameters.notify_event_types{problem}")
    seen: set[str] = set()
    for i, hook in enumerate(params.get("webhooks") or ()):
        if not isinstance(hook, Mapping):
            continue
        where = f"parameters.webhooks[{i}]"
        problem = url_problem(hook.get("url"))
        if problem:
            raise InvalidParameters(f"{where}.url: {problem}")
        if hook["url"] in seen:
            raise InvalidParameters(f"{where}.url: the same URL is subscribed twice; give one entry per URL")
        seen.add(hook["url"])
        problem = check_patterns(hook.get("event_types") or ())
        if problem:
            raise InvalidParameters(f"{where}.event_types{problem}")


@dataclass(frozen=True)
class Delivery:
    channel: str   # webhook | email | event_notifications
    target: str    # URL, address, or the Event Notifications instance


def instance_deliveries(params: Mapping[str, Any], event_type: str, severity: str, *,
                        email: bool) -> list[Delivery]:
    """The deliveries an instance's parameters ask for this event (no e-mail when no transport is set)."""
    out: list[Delivery] = []
    for hook in params.get("webhooks") or ():
        if isinstance(hook, Mapping) and isinstance(hook.get("url"), str) and \
                matches(hook.get("event_types"), event_type, severity):
            out.append(Delivery("webhook", hook["url"]))
    if email and matches(params.get("notify_event_types"), event_type, severity):
        for address in dict.fromkeys(params.get("notification_emails") or ()):
            out.append(Delivery("email", str(address)))
    return out


def webhook_secret(params: Mapping[str, Any], url: str) -> str | None:
    for hook in params.get("webhooks") or ():
        if isinstance(hook, Mapping) and hook.get("url") == url:
            return hook.get("secret")
    return None
