"""HTTP basic authentication with constant-time comparison, and the generated default credentials."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from broker.domain.errors import Unauthorized

CREDENTIALS_FILE = "credentials.json"


@dataclass(frozen=True)
class BasicCredentials:
    username: str
    password: str


def load_or_create_credentials(state_dir: Path) -> tuple[BasicCredentials, bool]:
    """Read the generated credentials beside the database, creating them (mode 0600) the first time.

    Returns the credentials and whether they were created now.
    """
    path = state_dir / CREDENTIALS_FILE
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        return BasicCredentials(data["username"], data["password"]), False
    state_dir.mkdir(parents=True, exist_ok=True)
    creds = BasicCredentials("broker", secrets.token_urlsafe(24))
    # O_EXCL: two processes starting at once must not both write (and print) different passwords.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_credentials(state_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"username": creds.username, "password": creds.password}, fh)
    return creds, True


class BasicAuthenticator:
    scheme = "basic"

    def __init__(self, *credentials: BasicCredentials) -> None:
        self._credentials = credentials

    def authenticate(self, authorization: str | None) -> str | None:
        """Return the principal for valid credentials, None when the header is not basic auth."""
        if not authorization or not authorization.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed basic credentials") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise Unauthorized("malformed basic credentials")
        ok = False
        for cred in self._credentials:
            # Compare both parts every time so the timing does not reveal which one was wrong.
            user_ok = hmac.compare_digest(user.encode(), cred.username.encode())
            pass_ok = hmac.compare_digest(password.encode(), cred.password.encode())
            ok |= user_ok and pass_ok
        if not ok:
            raise Unauthorized("invalid credentials")
        return f"basic:{user}"
