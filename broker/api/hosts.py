"""Which request ``Host`` may become a URL the broker hands out (an instance's ``dashboard_url``).

A request's ``Host`` header is chosen by whoever sends it: stored as an instance's ``dashboard_url`` it would
send the platform's users to any site (``Host: evil.example``). So a Host becomes a base URL only when

- ``DRBROKER_ALLOWED_HOSTS`` (comma-separated ``host[:port]``) lists it (an entry without a port admits that
  name on any port), or
- no allow-list is set and it is a loopback name or address (``localhost``, ``127.0.0.1``, ``[::1]``), so that
  ``make run`` and curl keep working.

``DRBROKER_PUBLIC_URL`` overrides both (the Host is then never used). Otherwise the answer has no
``dashboard_url`` (the OSB spec makes it optional) and the broker logs one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flask import current_app, request

log = logging.getLogger(__name__)

LOOPBACK = frozenset({"localhost", "127.0.0.1", "[::1]"})
_WARNED = "drbroker.untrusted_host_warned"


def split_host(host: str) -> tuple[str, str | None]:
    """``name[:port]`` (``[v6]:port`` included) as (lower-case name, port or None)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        name, rest = host[:end + 1], host[end + 1:]
        return name, rest[1:] if rest.startswith(":") else None
    if ":" in host:
        name, port = host.rsplit(":", 1)
        return name, port
    return host, None


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    name, port = split_host(host)
    if not name:
        return False
    entries = [split_host(a) for a in allowed if a.strip()]
    if not entries:
        return name in LOOPBACK
    return any(n == name and (p is None or p == port) for n, p in entries)


def trusted_base_url() -> str | None:
    """The request's own base URL if its Host may be handed out, else None (warned about once per app)."""
    settings = current_app.extensions["drbroker"].settings
    if getattr(settings, "public_url", None):
        return None  # the configured URL is used; the Host never is
    allowed = getattr(settings, "allowed_hosts", ())
    if host_allowed(request.host, allowed):
        return request.host_url
    if not current_app.extensions.get(_WARNED):
        current_app.extensions[_WARNED] = True
        log.warning("a request's Host is not in DRBROKER_ALLOWED_HOSTS (%s): answers carry no dashboard_url; "
                    "set DRBROKER_PUBLIC_URL or DRBROKER_ALLOWED_HOSTS",
                    ", ".join(allowed) if allowed else "unset: loopback only")
    return None
