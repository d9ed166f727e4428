"""The options every ``drbroker client`` command takes, before or after the subcommand.

The group and every subcommand declare the same options; a command merges the two, its own value winning.
Only the group's options read the environment (DRBROKER_CLIENT_*), so an explicit option anywhere on the
command line beats a variable, and a variable beats a profile. Nothing here needs the broker: the URL is
checked when the first request is made, so ``--help`` works everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from broker.client.osb import OSBClient

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_API_VERSION = "2.17"
ENV_PREFIX = "DRBROKER_CLIENT_"


def default_profile() -> Path:
    return Path.home() / ".config" / "drbroker" / "client.yaml"


@dataclass(frozen=True)
class Options:
    url: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    profile: str | None = None
    insecure: bool = False
    api_version: str | None = None
    as_json: bool = False

    def overridden_by(self, other: Options) -> Options:
        """These options with every value ``other`` gives (a flag counts when it is set)."""
        given = {f.name: getattr(other, f.name) for f in fields(other) if getattr(other, f.name) not in (None, False)}
        return replace(self, **given)

    def build_client(self) -> OSBClient:
        """The HTTP client, from these options, then the profile; a usage error when no URL is known."""
        explicit = Path(self.profile) if self.profile else None
        path = explicit or default_profile()
        data: dict[str, Any] = {}
        if explicit is not None or path.exists():
            try:
                loaded = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError) as exc:
                raise click.UsageError(f"--profile {path}: {exc}") from None
            if loaded is not None and not isinstance(loaded, dict):
                raise click.UsageError(f"--profile {path}: a mapping with url, user, password or token is needed")
            data = loaded or {}
        url = self.url or data.get("url")
        if not url:
            raise click.UsageError(f"no broker URL: give --url, set {ENV_PREFIX}URL, or a profile with url "
                                   f"(--profile, {ENV_PREFIX}PROFILE or {default_profile()})")
        return OSBClient(str(url), user=self.user or data.get("user"), password=self.password or data.get("password"),
                         token=self.token or data.get("token"),
                         api_version=str(self.api_version or data.get("api_version") or DEFAULT_API_VERSION),
                         verify=not (self.insecure or bool(data.get("insecure"))))


_NAMES = [f.name for f in fields(Options)]


def _declarations(from_env: bool) -> list[Callable[[F], F]]:
    def env(name: str) -> dict[str, Any]:
        return {"envvar": ENV_PREFIX + name, "show_envvar": True} if from_env else {}

    return [
        click.option("--url", help="the broker's base URL", **env("URL")),
        click.option("--user", help="basic-auth user", **env("USER")),
        click.option("--password", help="basic-auth password", **env("PASSWORD")),
        click.option("--token", help="a bearer token instead of basic auth", **env("TOKEN")),
        click.option("--profile", type=click.Path(dir_okay=False),
                     help="YAML with url, user, password or token (default ~/.config/drbroker/client.yaml "
                          "if it exists)", **env("PROFILE")),
        click.option("--insecure", is_flag=True, default=False, help="do not verify TLS certificates"),
        click.option("--api-version", help=f"X-Broker-API-Version (default {DEFAULT_API_VERSION})",
                     **env("API_VERSION")),
        click.option("--json", "as_json", is_flag=True, default=False,
                     help="JSON on stdout, errors included ({\"error\", \"description\", \"status\"})"),
    ]


def group_options(fn: F) -> F:
    """The group's copy of the shared options (these read DRBROKER_CLIENT_*)."""
    for declare in reversed(_declarations(from_env=True)):
        fn = declare(fn)
    return fn


def command_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A subcommand's copy of the shared options: the command receives the merged ``Options`` first."""

    @functools.wraps(fn)
    def merged(*args: Any, **kwargs: Any) -> Any:
        own = Options(**{name: kwargs.pop(name) for name in _NAMES})
        ctx = click.get_current_context()
        inherited = ctx.find_object(Options) or Options()
        options = inherited.overridden_by(own)
        ctx.meta["drbroker.client.json"] = options.as_json
        return fn(options, *args, **kwargs)

    for declare in reversed(_declarations(from_env=False)):
        merged = declare(merged)
    return merged
