"""The one table from domain errors to OSB HTTP responses (tested to cover every error class)."""

from __future__ import annotations

from typing import Any

from broker.domain import errors as e

STATUS: dict[type[e.BrokerError], int] = {
    e.BrokerError: 500,
    e.BadRequest: 400,
    e.InvalidParameters: 400,
    e.Unauthorized: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.Gone: 410,
    e.VersionNotSupported: 412,
    e.PayloadTooLarge: 413,
    e.Unprocessable: 422,
    e.InstanceDisabled: 422,
    e.AsyncRequired: 422,
    e.ConcurrencyError: 422,
    e.MaintenanceInfoConflict: 422,
    e.RequiresApp: 422,
    e.DeletionRefused: 422,
    e.BackendError: 502,
    e.TransientBackendError: 503,
    e.AwaitingApproval: 503,  # a step waits for a person; never raised in a request, only in a worker
    e.PermanentBackendError: 502,
    e.ServiceUnavailable: 503,
}


def status_for(error: e.BrokerError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def body_for(error: e.BrokerError, *, allow_usable_flags: bool) -> dict[str, Any]:
    """OSB error body. ``instance_usable``/``update_repeatable`` only on update or deprovision (spec E2)."""
    body: dict[str, Any] = {"error": error.error_code, "description": error.description}
    if allow_usable_flags:
        if error.instance_usable is not None:
            body["instance_usable"] = error.instance_usable
        if error.update_repeatable is not None:
            body["update_repeatable"] = error.update_repeatable
    return body
