"""How the client words what the broker answers: status lines, and errors as one line or one JSON object.

The words themselves are the broker's (its OSB ``description``s); this module only puts them after the action
the user ran, without repeating what the line already says: the broker's descriptions begin with the state
("succeeded: provisioned; ...") or the operation's OSB type ("update: queued"), and the status line names both.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from broker.client.osb import ClientError

EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_BROKER, EXIT_TIMEOUT = 1, 2, 3, 4, 5

# What the broker says an operation of each kind did, as the first part of its success description.
_DONE = {"provision": "provisioned", "update": "updated", "deprovision": "deprovisioned", "bind": "bound",
         "unbind": "unbound"}
_DONE_ACTION = {verb: action for action, verb in _DONE.items()}
_TYPE_PREFIX = re.compile(r"^([a-z_]+): (queued\b.*)$", re.S)
_ACTION_DONE = re.compile(r"^([a-z_]+) done$")


def action_in(description: str) -> str | None:
    """The action a broker description names ("update: queued", "succeeded: test_failover done; ...")."""
    text = description
    for state in ("succeeded: ", "failed: "):
        if text.startswith(state):
            text = text[len(state):]
    if m := _TYPE_PREFIX.match(text):
        return m.group(1)
    head = text.split("; ", 1)[0]
    if m := _ACTION_DONE.match(head):
        return m.group(1)
    return _DONE_ACTION.get(head)


def detail(action: str, state: str, description: str) -> str:
    """The part of ``description`` a line "<action>: <state>" does not already say."""
    text = description.strip()
    for prefix in (f"{state}: ", f"{state}; "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if text == state:
        return ""
    if m := _TYPE_PREFIX.match(text):  # "update: queued" on a test_failover: the line names the DR action
        text = m.group(2)
    head, _, rest = text.partition("; ")
    if head in (f"{action} done", _DONE.get(action), "gone" if action == "deprovision" else None):
        text = rest
    return text


def status_line(action: str, answer: dict[str, Any]) -> str:
    """``provision: in progress (step 2/7: creating replication group)``, ``provision: succeeded``."""
    state = str(answer.get("state") or "unknown")
    more = detail(action, state, str(answer.get("description") or ""))
    return f"{action}: {state}" + (f" ({more})" if more else "")


def _error_code(exc: ClientError) -> str:
    if exc.error:
        return exc.error
    if exc.status is None:
        return "Unreachable"
    try:
        return HTTPStatus(exc.status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return f"HTTP{exc.status}"


def client_error(exc: ClientError, *, token: bool = False) -> tuple[dict[str, Any], int]:
    """The error document of a failed request and the exit code it means."""
    if exc.status == 401:
        check = "--token (DRBROKER_CLIENT_TOKEN" if token else "--user/--password (DRBROKER_CLIENT_USER/_PASSWORD"
        said = f"{exc.status} {exc.error or 'Unauthorized'}: {exc.description}"
        return ({"error": exc.error or "Unauthorized", "status": 401,
                 "description": f"authentication failed: check {check}, the profile); the broker answered {said}"},
                EXIT_REFUSED)
    code = EXIT_REFUSED if exc.status is not None and 400 <= exc.status < 500 else EXIT_BROKER
    return {"error": _error_code(exc), "description": exc.description, "status": exc.status}, code


def one_line(doc: dict[str, Any]) -> str:
    """An error document as the line printed on stderr."""
    if doc.get("status") == 401 or doc.get("status") is None:
        return f"error: {doc['description']}"
    return f"error: {doc['status']} {doc['error']}: {doc['description']}"
