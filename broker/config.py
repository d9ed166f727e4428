"""Settings, from environment variables (see the configuration table in README.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = Path(".drbroker")
EVIDENCE_PREFIXES = ("DRBROKER_REHEARSAL_", "DRBROKER_EVENTS_", "DRBROKER_COS_", "DRBROKER_NOTIFY_",
                     "DRBROKER_SMTP_", "DRBROKER_WEBHOOK_", "DRBROKER_EVENT_NOTIFICATIONS_")


def _catalog_default() -> str:
    # The shipped catalog sits beside the package in a checkout; an installed wheel may override it.
    here = Path(__file__).resolve().parent.parent / "catalog"
    return str(here if here.is_dir() else Path("catalog"))


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    """A number from the environment; a value that is not one stops start-up naming the variable."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None


def env_text(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """A setting's text, stripped; empty or unset is ``default``."""
    value = (env.get(name) or "").strip()
    return value or default


def env_number(env: Mapping[str, str], name: str, default: float, *, low: float, high: float) -> float:
    """A number within ``low..high``; anything else stops start-up naming the variable."""
    raw = env_text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise SystemExit(f"{name}={raw!r} must be between {low:g} and {high:g}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    """A whole number within ``low..high`` (as ``env_number``)."""
    value = env_number(env, name, default, low=low, high=high)
    if value != int(value):
        raise SystemExit(f"{name}={env.get(name)!r} is not a whole number")
    return int(value)


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env_text(env, name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{name}={raw!r} must be true or false")


@dataclass(frozen=True)
class Settings:
    database_url: str = f"sqlite:///{DEFAULT_STATE_DIR / 'state.db'}"
    orchestrator: str = "simulated"
    sim_step_seconds: float = 1.0
    sim_faults: str = ""
    # The simulated Key Protect's calendar: seconds in a month of a root key's rotation interval, and how often
    # a deprovision waiting for a second approver of a dual-authorisation key looks again.
    sim_month_seconds: float = 30 * 86400.0
    sim_approval_poll_seconds: float = 60.0
    catalog_path: str = field(default_factory=_catalog_default)
    log_level: str = "INFO"
    log_format: str = "text"
    auth: tuple[str, ...] = ("basic",)
    username: str | None = None
    password: str | None = None
    public_url: str | None = None
    # Request Hosts that may become a dashboard_url when public_url is unset (README; broker.api.hosts): empty
    # admits loopback names only.
    allowed_hosts: tuple[str, ...] = ()
    lease_seconds: float = 15.0
    poll_seconds: float = 0.5
    sync_bind_timeout: float = 60.0
    worker_threads: int = 2
    account_instance_limit: int = 20
    rpo_sample_seconds: float = 60.0
    # How long RPO samples are kept (days): a report over a longer period has RPO figures for this long only.
    rpo_sample_keep_days: float = 31.0
    dashboard_secret: str | None = None
    # The longest a signed dashboard link may live (docs/dashboard.md): the links handed to the platform live this
    # long, and `drbroker dashboard link --ttl` may ask for no more.
    dashboard_link_max_seconds: float = 86400.0
    metrics_public: bool = False
    # Authentication (README: "Authentication"): IBM IAM for bearer-crn, extra basic credential pairs.
    iam_url: str = "https://iam.cloud.ibm.com"
    broker_crn: str | None = None
    credentials_file: str | None = None
    # DRBROKER_STATE_DIR: the one directory every file the broker writes goes to (docs/deploying.md); unset, the
    # SQLite file's directory, else ./.drbroker (see state_dir).
    state_directory: str | None = None
    # Secrets at rest (README: "Secrets at rest"): the key-encryption key.
    kek: str = "local"
    kek_file: str | None = None
    # DRBROKER_KEK=keyprotect: a Key Protect root key (URL, instance GUID, root key id, API key for IAM).
    kek_keyprotect_url: str = "https://us-south.kms.cloud.ibm.com"
    kek_instance_id: str | None = None
    kek_root_key_id: str | None = None
    kek_apikey: str | None = None
    # The audit trail (docs/security.md, "Audit trail"): the head's checkpoint file outside the database, and
    # how many refused requests per client and in all get a record of their own per minute and process.
    audit_checkpoint: str | None = None
    audit_refused_per_client: int = 10
    audit_refused_per_minute: int = 60
    # The ibmcloud backend (README: "Running against IBM Cloud"): every DRBROKER_IBMCLOUD_* and
    # DRBROKER_METERING_* variable, read by broker.orchestrators.ibmcloud.config.
    ibmcloud_env: Mapping[str, str] = field(default_factory=dict)
    # The DR-evidence parts (broker.jobs): every DRBROKER_REHEARSAL_*, _EVENTS_*, _COS_*, _NOTIFY_*, _SMTP_*,
    # _WEBHOOK_* and _EVENT_NOTIFICATIONS_* variable, each read (and checked) by the part it configures.
    evidence_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        settings = cls(
            database_url=env.get("DRBROKER_DATABASE_URL") or (
                f"sqlite:///{Path(env['DRBROKER_STATE_DIR']) / 'state.db'}" if env.get("DRBROKER_STATE_DIR")
                else cls.database_url),
            orchestrator=env.get("DRBROKER_ORCHESTRATOR") or "simulated",
            sim_step_seconds=env_float(env, "DRBROKER_SIM_STEP_SECONDS", 1.0),
            sim_faults=env.get("DRBROKER_SIM_FAULTS", ""),
            sim_month_seconds=env_float(env, "DRBROKER_SIM_MONTH_SECONDS", 30 * 86400.0),
            sim_approval_poll_seconds=env_float(env, "DRBROKER_SIM_APPROVAL_POLL_SECONDS", 60.0),
            catalog_path=env.get("DRBROKER_CATALOG") or _catalog_default(),
            log_level=(env.get("DRBROKER_LOG_LEVEL") or "INFO").upper(),
            log_format="json" if (env.get("DRBROKER_LOG_FORMAT") or "").lower() == "json" else "text",
            auth=tuple(a.strip() for a in (env.get("DRBROKER_AUTH") or "basic").split(",") if a.strip()),
            username=env.get("DRBROKER_USERNAME") or None,
            password=env.get("DRBROKER_PASSWORD") or None,
            public_url=env.get("DRBROKER_PUBLIC_URL") or None,
            allowed_hosts=tuple(h.strip().lower() for h in (env.get("DRBROKER_ALLOWED_HOSTS") or "").split(",")
                                if h.strip()),
            lease_seconds=env_float(env, "DRBROKER_LEASE_SECONDS", 15.0),
            poll_seconds=env_float(env, "DRBROKER_POLL_SECONDS", 0.5),
            sync_bind_timeout=env_float(env, "DRBROKER_SYNC_BIND_TIMEOUT", 60.0),
            worker_threads=int(env_float(env, "DRBROKER_WORKER_THREADS", 2)),
            account_instance_limit=int(env_float(env, "DRBROKER_ACCOUNT_INSTANCE_LIMIT", 20)),
            rpo_sample_seconds=env_float(env, "DRBROKER_RPO_SAMPLE_SECONDS", 60.0),
            rpo_sample_keep_days=env_float(env, "DRBROKER_RPO_SAMPLE_KEEP_DAYS", 31.0),
            dashboard_secret=env.get("DRBROKER_DASHBOARD_SECRET") or None,
            dashboard_link_max_seconds=env_float(env, "DRBROKER_DASHBOARD_LINK_MAX_SECONDS", 86400.0),
            metrics_public=(env.get("DRBROKER_METRICS_PUBLIC") or "").lower() in ("1", "true", "yes"),
            iam_url=(env.get("DRBROKER_IAM_URL") or "https://iam.cloud.ibm.com").rstrip("/"),
            broker_crn=env.get("DRBROKER_BROKER_CRN") or None,
            credentials_file=env.get("DRBROKER_CREDENTIALS_FILE") or None,
            state_directory=env.get("DRBROKER_STATE_DIR") or None,
            kek=(env.get("DRBROKER_KEK") or "local").strip().lower(),
            kek_file=env.get("DRBROKER_KEK_FILE") or None,
            kek_keyprotect_url=env.get("DRBROKER_KEK_KEYPROTECT_URL") or "https://us-south.kms.cloud.ibm.com",
            kek_instance_id=env.get("DRBROKER_KEK_INSTANCE_ID") or None,
            kek_root_key_id=env.get("DRBROKER_KEK_ROOT_KEY_ID") or None,
            kek_apikey=env.get("DRBROKER_KEK_APIKEY") or env.get("DRBROKER_IBMCLOUD_APIKEY") or None,
            audit_checkpoint=env.get("DRBROKER_AUDIT_CHECKPOINT") or None,
            audit_refused_per_client=int(env_float(env, "DRBROKER_AUDIT_REFUSED_PER_CLIENT", 10)),
            audit_refused_per_minute=int(env_float(env, "DRBROKER_AUDIT_REFUSED_PER_MINUTE", 60)),
            ibmcloud_env={k: v for k, v in env.items()
                          if k.startswith(("DRBROKER_IBMCLOUD_", "DRBROKER_METERING_"))},
            evidence_env={k: v for k, v in env.items() if k.startswith(EVIDENCE_PREFIXES)},
        )
        return replace(settings, **overrides)

    @property
    def kek_path(self) -> Path:
        """The local key file (``DRBROKER_KEK=local``): ``DRBROKER_KEK_FILE`` or ``kek.json`` in the state dir."""
        return Path(self.kek_file) if self.kek_file else self.state_dir / "kek.json"

    @property
    def state_dir(self) -> Path:
        """Where every file the broker writes lives (kek.json, dashboard.key, generated credentials):
        ``DRBROKER_STATE_DIR``, else beside the SQLite file, else ./.drbroker."""
        if self.state_directory:
            return Path(self.state_directory)
        if self.database_url.startswith("sqlite:///") and ":memory:" not in self.database_url:
            return Path(self.database_url[len("sqlite:///"):]).parent
        return DEFAULT_STATE_DIR
