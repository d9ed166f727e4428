"""The COS bucket the evidence goes to: configuration from ``DRBROKER_COS_*`` and a small client over
``ibm_boto3`` (IBM's COS SDK) with what the exporter needs: HEAD, an idempotent PUT, GET and listing.

Credentials are an IBM IAM API key with the COS instance's CRN (``ibm_api_key_id`` /
``ibm_service_instance_id``), or HMAC keys (what an S3-compatible server such as moto speaks). Both are
registered with the log redactor; neither is ever logged nor stored.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.config import env_int, env_number
from broker.security import redaction

DEFAULT_AUTH_ENDPOINT = "https://iam.cloud.ibm.com/identity/token"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class CosConfig:
    endpoint: str
    bucket: str
    prefix: str
    apikey: str | None = None
    instance_crn: str | None = None
    auth_endpoint: str = DEFAULT_AUTH_ENDPOINT
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str = "us-south"
    retention_days: int = 0
    interval: float = 60.0
    batch_records: int = 500
    lease_seconds: float = 60.0
    timeout: float = 30.0

    def __repr__(self) -> str:  # never the secrets
        return f"CosConfig(endpoint={self.endpoint!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CosConfig | None:
        """The configuration, or None when no bucket is set (no export). A bad value stops start-up with
        SystemExit naming the variable."""
        bucket = (env.get("DRBROKER_COS_BUCKET") or "").strip()
        if not bucket:
            return None
        if not _BUCKET.match(bucket):
            raise SystemExit(f"DRBROKER_COS_BUCKET: {bucket!r} is not a bucket name (3 to 63 lower-case "
                             "letters, digits, dots and hyphens)")
        endpoint = (env.get("DRBROKER_COS_ENDPOINT") or "").strip().rstrip("/")
        if not endpoint.startswith(("https://", "http://")):
            raise SystemExit("DRBROKER_COS_ENDPOINT: give the bucket's endpoint URL, e.g. "
                             "https://s3.us-south.cloud-object-storage.appdomain.cloud")
        prefix = (env.get("DRBROKER_COS_PREFIX") or "drbroker").strip().strip("/")
        if not prefix or any(part in ("", ".", "..") for part in prefix.split("/")):
            raise SystemExit("DRBROKER_COS_PREFIX: give a key prefix such as drbroker or prod/drbroker")
        apikey = env.get("DRBROKER_COS_APIKEY") or None
        crn = env.get("DRBROKER_COS_INSTANCE_CRN") or None
        key_id = env.get("DRBROKER_COS_ACCESS_KEY_ID") or None
        secret = env.get("DRBROKER_COS_SECRET_ACCESS_KEY") or None
        for value in (apikey, secret):
            if value:
                redaction.register_secret(value)
        if apikey and (key_id or secret):
            raise SystemExit("DRBROKER_COS_APIKEY and DRBROKER_COS_ACCESS_KEY_ID: give either an IAM API key or "
                             "HMAC keys, not both")
        if apikey and not crn:
            raise SystemExit("DRBROKER_COS_INSTANCE_CRN: an IAM API key needs the COS instance's CRN")
        if not apikey and not (key_id and secret):
            raise SystemExit("DRBROKER_COS_APIKEY: give an IAM API key (with DRBROKER_COS_INSTANCE_CRN) or both "
                             "DRBROKER_COS_ACCESS_KEY_ID and DRBROKER_COS_SECRET_ACCESS_KEY")
        return cls(
            endpoint=endpoint, bucket=bucket, prefix=prefix, apikey=apikey, instance_crn=crn,
            auth_endpoint=env.get("DRBROKER_COS_AUTH_ENDPOINT") or DEFAULT_AUTH_ENDPOINT,
            access_key_id=key_id, secret_access_key=secret,
            region=env.get("DRBROKER_COS_REGION") or "us-south",
            retention_days=env_int(env, "DRBROKER_COS_RETENTION_DAYS", 0, low=0, high=36500),
            interval=env_number(env, "DRBROKER_COS_EXPORT_SECONDS", 60.0, low=0.05, high=86400),
            batch_records=env_int(env, "DRBROKER_COS_BATCH_RECORDS", 500, low=1, high=100_000),
            lease_seconds=env_number(env, "DRBROKER_COS_LEASE_SECONDS", 60.0, low=1, high=3600),
        )


def content_md5(body: bytes) -> str:
    """The ``Content-MD5`` header value: COS requires it on PUTs to object-locked buckets."""
    return base64.b64encode(hashlib.md5(body).digest()).decode("ascii")  # noqa: S324 - S3's integrity header


def etag_of(body: bytes) -> str:
    """The ETag S3 and COS give a single-part PUT: the content's MD5 in hex."""
    return hashlib.md5(body).hexdigest()  # noqa: S324 - S3's ETag


class CosError(Exception):
    """COS refused or could not be reached; the message names the bucket and key, never a credential."""


class Bucket:
    """The configured bucket, through an ``ibm_boto3`` S3 client."""

    def __init__(self, config: CosConfig, client: Any = None) -> None:
        self.config = config
        self.name = config.bucket
        self.client = client if client is not None else make_client(config)
        self._lock_checked = False
        self._lock_enabled = False

    def key(self, *parts: str) -> str:
        return "/".join((self.config.prefix, *parts))

    # object lock ----------------------------------------------------------------------------------
    def object_lock(self) -> bool:
        """Whether the bucket has object lock enabled (asked once per process)."""
        if not self._lock_checked:
            try:
                conf = self.client.get_object_lock_configuration(Bucket=self.name)
                enabled = (conf.get("ObjectLockConfiguration") or {}).get("ObjectLockEnabled") == "Enabled"
            except Exception as exc:
                code = _code(exc)
                if code not in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration",
                                "NotImplemented", "InvalidRequest"):
                    raise CosError(f"bucket {self.name}: cannot read its object lock configuration: "
                                   f"{_describe(exc)}") from None
                enabled = False
            self._lock_enabled, self._lock_checked = enabled, True
        return self._lock_enabled

    # objects --------------------------------------------------------------------------------------
    def head_etag(self, key: str) -> str | None:
        """The object's ETag (hex, without quotes), or None when there is no such object."""
        try:
            head = self.client.head_object(Bucket=self.name, Key=key)
        except Exception as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise CosError(f"HEAD {self.name}/{key}: {_describe(exc)}") from None
        return str(head.get("ETag", "")).strip('"')

    def put_once(self, key: str, body: bytes, *, content_type: str = "application/json") -> bool:
        """Write ``body`` at ``key`` unless an object with exactly these bytes is there already (True: written).

        Raises CosError when a different object holds the key: evidence is never overwritten.
        """
        etag = etag_of(body)
        found = self.head_etag(key)
        if found == etag:
            return False
        if found is not None:
            raise CosError(f"{self.name}/{key} exists with other content (ETag {found}, expected {etag}): "
                           "another writer uses this prefix, or the records were changed since they were "
                           "exported; nothing was overwritten")
        args: dict[str, Any] = {"Bucket": self.name, "Key": key, "Body": body, "ContentType": content_type,
                                "ContentMD5": content_md5(body)}
        if self.config.retention_days and self.object_lock():
            args["ObjectLockMode"] = "COMPLIANCE"
            args["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=self.config.retention_days)
        try:
            self.client.put_object(**args)
        except Exception as exc:
            raise CosError(f"PUT {self.name}/{key}: {_describe(exc)}") from None
        return True

    def get(self, key: str) -> bytes:
        try:
            return bytes(self.client.get_object(Bucket=self.name, Key=key)["Body"].read())
        except Exception as exc:
            raise CosError(f"GET {self.name}/{key}: {_describe(exc)}") from None

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix`` in key order."""
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.name, "Prefix": prefix}
            if token:
                args["ContinuationToken"] = token
            try:
                page = self.client.list_objects_v2(**args)
            except Exception as exc:
                raise CosError(f"LIST {self.name}/{prefix}: {_describe(exc)}") from None
            for item in page.get("Contents") or ():
                yield str(item["Key"])
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")


def make_client(config: CosConfig) -> Any:
    """An ``ibm_boto3`` S3 client for the configured credentials."""
    import ibm_boto3
    from ibm_botocore.client import Config

    # One attempt per call, bounded: the export job runs again on schedule, and a stalled call must not hold
    # the cursor's lease much longer than its timeout.
    client_config = Config(signature_version="s3v4" if config.access_key_id else "oauth",
                           connect_timeout=min(config.timeout, 10), read_timeout=config.timeout,
                           retries={"max_attempts": 2})
    if config.apikey:
        return ibm_boto3.client("s3", ibm_api_key_id=config.apikey, ibm_service_instance_id=config.instance_crn,
                                ibm_auth_endpoint=config.auth_endpoint, config=client_config,
                                endpoint_url=config.endpoint)
    return ibm_boto3.client("s3", aws_access_key_id=config.access_key_id,
                            aws_secret_access_key=config.secret_access_key, config=client_config,
                            endpoint_url=config.endpoint, region_name=config.region)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


def _describe(exc: Exception) -> str:
    code = _code(exc)
    if code:
        message = ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Message") or ""
        text = f"{code}: {message}".rstrip(": ")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redaction.redact(text)
