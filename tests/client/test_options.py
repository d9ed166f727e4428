"""The options every client command shares (issue 15): accepted before or after the subcommand, the
subcommand's value winning; ``--help`` needs neither a broker nor a URL; DRBROKER_CLIENT_* are the fallbacks."""

from __future__ import annotations

import json

from tests.client.cli import client, drbroker, one_json
from tests.client.conftest import client_env
from tests.conftest import PASSWORD, USER

COMMANDS = ["catalog", "list", "provision", "update", "dr-action", "deprovision", "instance", "last-operation",
            "bind", "unbind"]
SHARED = ["--json", "--url", "--user", "--password", "--token", "--profile", "--insecure", "--api-version"]
NOWHERE = "http://127.0.0.1:9"  # nothing listens on the discard port


def test_help_of_every_subcommand_needs_no_broker_and_shows_the_shared_options(home) -> None:
    for command in COMMANDS:
        out = drbroker("client", command, "--help", env=client_env(home), timeout=60)
        assert out.returncode == 0, (command, out.stdout, out.stderr)
        assert all(option in out.stdout for option in SHARED), (command, out.stdout)


def test_the_shared_options_work_after_the_subcommand(shared_broker, home) -> None:
    out = client(shared_broker.url, "catalog", "--json", env=client_env(home))
    assert out.returncode == 0, out.stderr
    assert one_json(out)["services"][0]["name"] == "powervs-dr"
    # and still before it
    out = drbroker("client", "--json", "--url", shared_broker.url, "--user", USER, "--password", PASSWORD, "catalog",
                   env=client_env(home))
    assert out.returncode == 0 and one_json(out)["services"][0]["plans"], out.stderr


def test_an_option_given_on_the_subcommand_wins_over_the_groups(shared_broker, home) -> None:
    out = drbroker("client", "--url", NOWHERE, "--user", USER, "--password", "not-the-password",
                   "catalog", "--url", shared_broker.url, "--password", PASSWORD, env=client_env(home))
    assert out.returncode == 0, out.stderr
    assert "grs-async" in out.stdout
    out = drbroker("client", "--url", shared_broker.url, "catalog", "--url", NOWHERE, env=client_env(home))
    assert out.returncode == 4 and "cannot reach" in out.stderr, out


def test_the_environment_is_the_fallback_and_the_command_line_beats_it(shared_broker, home) -> None:
    env = client_env(home, DRBROKER_CLIENT_URL=shared_broker.url, DRBROKER_CLIENT_USER=USER,
                     DRBROKER_CLIENT_PASSWORD=PASSWORD)
    out = drbroker("client", "catalog", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert one_json(out)["services"][0]["name"] == "powervs-dr"
    out = drbroker("client", "catalog", "--url", NOWHERE, env=env)
    assert out.returncode == 4, out


def test_a_profile_given_on_the_subcommand(shared_broker, home, tmp_path) -> None:
    profile = tmp_path / "broker.yaml"
    profile.write_text(json.dumps({"url": shared_broker.url, "user": USER, "password": PASSWORD}))
    out = drbroker("client", "catalog", "--profile", str(profile), "--json", env=client_env(home))
    assert out.returncode == 0, out.stderr
    assert one_json(out)["services"][0]["name"] == "powervs-dr"


def test_without_a_url_a_request_is_a_usage_error_naming_where_the_url_comes_from(home) -> None:
    out = drbroker("client", "catalog", env=client_env(home), timeout=60)
    assert out.returncode == 2, out
    assert "--url" in out.stderr and "DRBROKER_CLIENT_URL" in out.stderr
    out = drbroker("client", "catalog", "--json", env=client_env(home), timeout=60)
    assert out.returncode == 2, out
    error = one_json(out)
    assert error["error"] == "UsageError" and "--url" in error["description"] and error["status"] is None
