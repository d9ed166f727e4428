"""The notification settings (``DRBROKER_NOTIFY_*``, ``_SMTP_*``, ``_WEBHOOK_*``, ``_EVENT_NOTIFICATIONS_*``),
read from ``settings.evidence_env``. A bad value stops start-up naming the variable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from broker.config import env_flag as _flag
from broker.config import env_number as _number
from broker.config import env_text as _text
from broker.notifications.selection import check_patterns


def _file(env: Mapping[str, str], name: str) -> str | None:
    path = _text(env, name)
    if path is not None and not Path(path).is_file():
        raise SystemExit(f"{name}={path!r} is not a readable file")
    return path


def _patterns(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = _text(env, name)
    if raw is None:
        return default
    items = tuple(p.strip() for p in raw.split(",") if p.strip())
    problem = check_patterns(items)
    if problem:
        raise SystemExit(f"{name}: {problem}")
    return items


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None
    password: str | None
    sender: str
    starttls: bool
    ssl: bool
    ca_file: str | None
    timeout: float


@dataclass(frozen=True)
class EventNotificationsConfig:
    url: str
    instance_id: str
    apikey: str
    source_id: str
    iam_url: str
    event_types: tuple[str, ...]
    timeout: float


@dataclass(frozen=True)
class NotifyConfig:
    enabled: bool = True
    interval: float = 5.0
    lease_seconds: float = 60.0
    max_attempts: int = 8
    backoff_initial: float = 30.0
    backoff_max: float = 3600.0
    batch: int = 100
    # CloudEvents ``source``: the broker's public URL (or a URN when it has none).
    source: str = "urn:powervs-dr-broker"
    webhook_timeout: float = 10.0
    webhook_ca_file: str | None = None
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    # "smtp", "event_notifications" or None (no e-mail is sent; notification_emails are stored only)
    email_via: str | None = None
    smtp: SmtpConfig | None = None
    event_notifications: EventNotificationsConfig | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, public_url: str | None = None,
                 iam_url: str = "https://iam.cloud.ibm.com") -> NotifyConfig:
        smtp = None
        host = _text(env, "DRBROKER_SMTP_HOST")
        if host:
            ssl = _flag(env, "DRBROKER_SMTP_SSL", False)
            starttls = _flag(env, "DRBROKER_SMTP_STARTTLS", not ssl)
            if ssl and starttls:
                raise SystemExit("DRBROKER_SMTP_SSL and DRBROKER_SMTP_STARTTLS: choose one (465 is SSL, 587 "
                                 "STARTTLS)")
            sender = _text(env, "DRBROKER_SMTP_FROM")
            if not sender or "@" not in sender:
                raise SystemExit("DRBROKER_SMTP_FROM must be the sender's e-mail address when DRBROKER_SMTP_HOST "
                                 "is set")
            username, password = _text(env, "DRBROKER_SMTP_USERNAME"), _text(env, "DRBROKER_SMTP_PASSWORD")
            if bool(username) != bool(password):
                raise SystemExit("DRBROKER_SMTP_USERNAME and DRBROKER_SMTP_PASSWORD go together")
            smtp = SmtpConfig(host=host, port=int(_number(env, "DRBROKER_SMTP_PORT", 465 if ssl else 587,
                                                          low=1, high=65535)),
                              username=username, password=password, sender=sender, starttls=starttls, ssl=ssl,
                              ca_file=_file(env, "DRBROKER_SMTP_CA_FILE"),
                              timeout=_number(env, "DRBROKER_SMTP_TIMEOUT_SECONDS", 15.0, low=1, high=300))
        en = None
        en_url = _text(env, "DRBROKER_EVENT_NOTIFICATIONS_URL")
        if en_url:
            missing = [n for n in ("DRBROKER_EVENT_NOTIFICATIONS_INSTANCE_ID", "DRBROKER_EVENT_NOTIFICATIONS_APIKEY",
                                   "DRBROKER_EVENT_NOTIFICATIONS_SOURCE_ID") if not _text(env, n)]
            if missing:
                raise SystemExit(f"{', '.join(missing)}: needed with DRBROKER_EVENT_NOTIFICATIONS_URL")
            if not en_url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
                raise SystemExit(f"DRBROKER_EVENT_NOTIFICATIONS_URL={en_url!r} must be an https:// URL")
            en = EventNotificationsConfig(
                url=en_url.rstrip("/"), instance_id=str(_text(env, "DRBROKER_EVENT_NOTIFICATIONS_INSTANCE_ID")),
                apikey=str(_text(env, "DRBROKER_EVENT_NOTIFICATIONS_APIKEY")),
                source_id=str(_text(env, "DRBROKER_EVENT_NOTIFICATIONS_SOURCE_ID")),
                iam_url=str(_text(env, "DRBROKER_EVENT_NOTIFICATIONS_IAM_URL", iam_url)).rstrip("/"),
                event_types=_patterns(env, "DRBROKER_EVENT_NOTIFICATIONS_EVENT_TYPES", ("*",)),
                timeout=_number(env, "DRBROKER_EVENT_NOTIFICATIONS_TIMEOUT_SECONDS", 15.0, low=1, high=300))
        via = (_text(env, "DRBROKER_NOTIFY_EMAIL_VIA") or "").lower() or (
            "smtp" if smtp else "event_notifications" if en else "none")
        if via not in ("smtp", "event_notifications", "none"):
            raise SystemExit(f"DRBROKER_NOTIFY_EMAIL_VIA={via!r} must be smtp, event_notifications or none")
        if via == "smtp" and smtp is None:
            raise SystemExit("DRBROKER_NOTIFY_EMAIL_VIA=smtp needs DRBROKER_SMTP_HOST")
        if via == "event_notifications" and en is None:
            raise SystemExit("DRBROKER_NOTIFY_EMAIL_VIA=event_notifications needs DRBROKER_EVENT_NOTIFICATIONS_URL")
        initial = _number(env, "DRBROKER_NOTIFY_BACKOFF_SECONDS", 30.0, low=0, high=86400)
        return cls(
            enabled=_flag(env, "DRBROKER_NOTIFY_ENABLED", True),
            interval=_number(env, "DRBROKER_NOTIFY_INTERVAL_SECONDS", 5.0, low=0.05, high=3600),
            lease_seconds=_number(env, "DRBROKER_NOTIFY_LEASE_SECONDS", 60.0, low=1, high=3600),
            max_attempts=int(_number(env, "DRBROKER_NOTIFY_MAX_ATTEMPTS", 8, low=1, high=100)),
            backoff_initial=initial,
            backoff_max=_number(env, "DRBROKER_NOTIFY_BACKOFF_MAX_SECONDS", max(3600.0, initial), low=initial,
                                high=7 * 86400),
            batch=int(_number(env, "DRBROKER_NOTIFY_BATCH", 100, low=1, high=10000)),
            source=(public_url.rstrip("/") if public_url else "urn:powervs-dr-broker"),
            webhook_timeout=_number(env, "DRBROKER_WEBHOOK_TIMEOUT_SECONDS", 10.0, low=0.1, high=120),
            webhook_ca_file=_file(env, "DRBROKER_WEBHOOK_CA_FILE"),
            webhook_allow_http=_flag(env, "DRBROKER_WEBHOOK_ALLOW_HTTP", False),
            webhook_allow_private=_flag(env, "DRBROKER_WEBHOOK_ALLOW_PRIVATE", False),
            email_via=None if via == "none" else via, smtp=smtp, event_notifications=en)
