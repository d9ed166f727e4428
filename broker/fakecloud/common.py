"""Request helpers shared by the fake's per-service route modules."""

from __future__ import annotations

from typing import Any

from flask import request

from broker.fakecloud.state import FakeError


def json_body() -> dict[str, Any]:
    """The request's JSON object body; a 400 for anything else."""
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise FakeError(400, "bad_request", "the body must be a JSON object")
    return body


def need(args: dict[str, Any], *names: str) -> None:
    """A 400 naming the required parameters ``args`` lacks."""
    missing = [n for n in names if not args.get(n)]
    if missing:
        raise FakeError(400, "missing_parameter", f"missing required parameter(s): {', '.join(missing)}")
