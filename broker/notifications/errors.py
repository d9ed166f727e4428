"""What a sender raises when a delivery did not happen."""

from __future__ import annotations


class DeliveryFailed(Exception):
    """Not delivered. ``permanent``: retrying cannot help (the subscription is gone), so the row goes dead now.
    The message is stored in the outbox row: it names the cause, never a secret or a response body."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
