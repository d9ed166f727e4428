"""The one exception tree of the broker.

    BrokerError
    ├── BadRequest              400  malformed request, bad ids, schema violations
    │   └── InvalidParameters   400  parameters that fail validation
    ├── Unauthorized            401
    ├── NotFound                404
    ├── Conflict                409  same id, different attributes
    ├── Gone                    410  nothing left to delete
    ├── PayloadTooLarge         413
    ├── VersionNotSupported     412
    ├── Unprocessable           422  a state problem (e.g. instance disabled)
    │   ├── AsyncRequired           422  OSB error code AsyncRequired
    │   ├── ConcurrencyError        422  OSB error code ConcurrencyError
    │   ├── MaintenanceInfoConflict 422
    │   ├── RequiresApp             422
    │   └── DeletionRefused         422  an approval of a key's deletion Key Protect would refuse
    ├── BackendError            502  the orchestrator failed (transient or permanent)
    │   ├── TransientBackendError
    │   │   └── AwaitingApproval     a step waits for a person (e.g. a dual-authorisation delete)
    │   └── PermanentBackendError
    └── ServiceUnavailable      503

Each class carries its OSB error code; the HTTP status lives in one table in ``broker.api.errors``.
Nothing here knows about HTTP or openbrokerapi.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base of every error the broker raises on purpose."""

    error_code: str = "InternalError"

    def __init__(self, description: str, *, instance_usable: bool | None = None,
                 update_repeatable: bool | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.instance_usable = instance_usable
        self.update_repeatable = update_repeatable


class BadRequest(BrokerError):
    error_code = "BadRequest"


class InvalidParameters(BadRequest):
    error_code = "InvalidParameters"


class Unauthorized(BrokerError):
    error_code = "Unauthorized"


class Forbidden(BrokerError):
    error_code = "Forbidden"


class NotFound(BrokerError):
    error_code = "NotFound"


class Conflict(BrokerError):
    error_code = "Conflict"


class Gone(BrokerError):
    error_code = "Gone"


class PayloadTooLarge(BrokerError):
    error_code = "PayloadTooLarge"


class VersionNotSupported(BrokerError):
    error_code = "PreconditionFailed"


class Unprocessable(BrokerError):
    error_code = "UnprocessableEntity"


class InstanceDisabled(Unprocessable):
    error_code = "InstanceDisabled"


class AsyncRequired(Unprocessable):
    error_code = "AsyncRequired"


class ConcurrencyError(Unprocessable):
    error_code = "ConcurrencyError"


class MaintenanceInfoConflict(Unprocessable):
    error_code = "MaintenanceInfoConflict"


class RequiresApp(Unprocessable):
    error_code = "RequiresApp"


class DeletionRefused(Unprocessable):
    """An approval of a key's deletion that Key Protect would refuse (no key, not set for deletion, the same
    identity twice); raised by ``drbroker keys approve-deletion`` on the simulated backend."""


class BackendError(BrokerError):
    error_code = "BackendError"


class TransientBackendError(BackendError):
    """A failure that may succeed when retried: throttling, 5xx, timeouts."""

    error_code = "BackendUnavailable"

    def __init__(self, description: str, *, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class AwaitingApproval(TransientBackendError):
    """A step that waits for a person, not for a backend: a Key Protect key with a dual-authorisation policy
    that another identity must delete. ``description`` says who must do what, by when.

    The engine does not retry it within the run: it parks the operation (still in progress, with this
    description in last_operation) and runs the step again after ``retry_after`` seconds, however often,
    without counting it as a failure or against the operation's deadline (see ``broker.workflows.engine``).
    Where it is not a step (a compensation), it is an ordinary transient error that was not retried."""

    def __init__(self, description: str, *, retry_after: float = 900.0) -> None:
        super().__init__(description, retry_after=retry_after)


class PermanentBackendError(BackendError):
    error_code = "BackendFailed"


class ServiceUnavailable(BrokerError):
    error_code = "ServiceUnavailable"


class CatalogError(Exception):
    """A broken catalog file; stops start-up. Not a BrokerError: it never reaches a client."""
