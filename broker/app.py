"""Composition root: settings -> store, catalog, orchestrator, engine, worker, service, Flask app.

This is the only module that knows the concrete classes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from broker.api import audit as api_audit
from broker.api import dashboard, health, ibm, metrics, openapi, osb
from broker.api.audit_refusals import RefusalLimiter
from broker.api.errors import body_for, status_for
from broker.api.rawpath import RawPathMiddleware
from broker.api.versions import prune
from broker.config import Settings
from broker.domain.catalog import Catalog, load_catalog
from broker.domain.errors import BrokerError, PayloadTooLarge, Unauthorized
from broker.domain.protocols import Orchestrator
from broker.reports.retention import sample_retention_seconds
from broker.security import redaction
from broker.security.audit import AuditTrail, bounded
from broker.security.basic import (
    BasicAuthenticator,
    BasicCredentials,
    CredentialsError,
    load_or_create_credentials,
    read_credentials_file,
)
from broker.security.bearer import BearerCrnAuthenticator
from broker.security.envelope import Envelope, LocalKeyFile, SecretsError
from broker.services.osb import BrokerService
from broker.store import db
from broker.store.repository import Store
from broker.workflows.engine import Engine
from broker.workflows.rpo_sampler import RpoSampler
from broker.workflows.worker import Worker

log = logging.getLogger("drbroker")
access_log = logging.getLogger("drbroker.requests")

MAX_BODY_BYTES = 1024 * 1024
# Endpoints whose errors may say whether the instance is still usable (OSB error rule E2).
_USABLE_FLAG_ENDPOINTS = {"osb.update", "osb.deprovision"}


@dataclass
class Runtime:
    settings: Settings
    store: Store
    catalog: Catalog
    orchestrator: Orchestrator
    engine: Engine
    worker: Worker
    service: BrokerService
    authenticators: list[Any] = field(default_factory=list)
    audit: AuditTrail | None = None
    # Which refused requests get an audit record of their own (broker.api.audit_refusals).
    refusals: Any = None
    # Hourly usage records for paid plans (ibmcloud backend with DRBROKER_METERING_RESOURCE_ID); started with
    # the operation worker in each serving process.
    meter: Any = None
    # Samples each ready instance's achieved RPO for the dashboard; started with the operation worker.
    rpo_sampler: Any = None
    # Rotates the simulated Key Protect's root keys at their policy interval (simulated backend only; on IBM
    # Cloud Key Protect rotates by the key's own policy); started with the operation worker.
    key_rotation: Any = None
    # The DR-evidence jobs (broker.jobs: rehearsal scheduler, notification dispatch, COS export); started with
    # the operation worker.
    jobs: list[Any] = field(default_factory=list)
    # Set only when this start created the generated credentials file: the password, to print once.
    generated_password: str | None = None
    generated_username: str | None = None

    def authenticate(self) -> None:
        """Set ``g.principal`` or raise: no (usable) credentials -> 401, a bad bearer token -> 403."""
        header = request.headers.get("Authorization")
        for auth in self.authenticators:
            principal = auth.authenticate(header)
            if principal:
                g.principal = principal
                return
        if not header:
            raise Unauthorized("authentication required")
        schemes = " or ".join(a.scheme for a in self.authenticators)
        raise Unauthorized(f"authentication required: this broker accepts {schemes} credentials")

    @property
    def challenges(self) -> str:
        return ", ".join(a.challenge for a in self.authenticators) or 'Basic realm="drbroker"'


def make_orchestrator(settings: Settings, store: Store, audit: AuditTrail | None = None) -> Orchestrator:
    if settings.orchestrator == "simulated":
        from broker.orchestrators.simulated.orchestrator import SimulatedOrchestrator

        return SimulatedOrchestrator(store.engine, step_seconds=settings.sim_step_seconds,
                                     faults=settings.sim_faults, month_seconds=settings.sim_month_seconds,
                                     approval_poll_seconds=settings.sim_approval_poll_seconds)
    if settings.orchestrator == "ibmcloud":
        from broker.orchestrators.ibmcloud.config import IbmCloudConfig
        from broker.orchestrators.ibmcloud.orchestrator import IbmCloudOrchestrator

        return IbmCloudOrchestrator(IbmCloudConfig.from_env(settings.ibmcloud_env), store,
                                    audit=audit or AuditTrail(store))
    raise SystemExit(f"DRBROKER_ORCHESTRATOR={settings.orchestrator!r} is not available "
                     "(choose: simulated, ibmcloud)")


def make_envelope(settings: Settings) -> Envelope:
    """The envelope encryption of secrets at rest, with the configured key-encryption key."""
    if settings.kek == "local":
        try:
            return Envelope(LocalKeyFile(settings.kek_path))
        except SecretsError as exc:
            raise SystemExit(f"DRBROKER_KEK_FILE: {exc}") from None
    if settings.kek == "keyprotect":
        from broker.security.keyprotect import KeyProtectKEK

        missing = [name for name, value in (("DRBROKER_KEK_INSTANCE_ID", settings.kek_instance_id),
                                            ("DRBROKER_KEK_ROOT_KEY_ID", settings.kek_root_key_id),
                                            ("DRBROKER_KEK_APIKEY", settings.kek_apikey)) if not value]
        if missing:
            raise SystemExit(f"DRBROKER_KEK=keyprotect needs {', '.join(missing)}")
        assert settings.kek_instance_id and settings.kek_root_key_id and settings.kek_apikey
        redaction.register_secret(settings.kek_apikey)
        return Envelope(KeyProtectKEK(url=settings.kek_keyprotect_url, instance_id=settings.kek_instance_id,
                                      root_key_id=settings.kek_root_key_id, apikey=settings.kek_apikey,
                                      iam_url=settings.iam_url))
    raise SystemExit(f"DRBROKER_KEK={settings.kek!r} is not available (choose: local, keyprotect)")


def database_label(url: str) -> str:
    """The database URL as it may be shown: without its password (``postgresql://user@host:5432/db``)."""
    try:
        return make_url(url)._replace(password=None).render_as_string(hide_password=False)
    except (ArgumentError, ValueError):  # an unparsable URL: show its scheme only
        return url.partition(":")[0] + "://..."


def database_error(url: str, exc: BaseException) -> str:
    """One line for a database that cannot be reached or opened: the URL without password and the driver's
    first line (never a traceback, never the password)."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    text = reason[0] if reason else type(exc).__name__
    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        password = None
    if password:
        text = text.replace(str(password), "***")
    return f"drbroker: cannot use the database {database_label(url)}: {text}"


def check_data_keys(engine: Any, envelope: Envelope) -> None:
    """Refuse to start when the configured KEK cannot open the database's data keys.

    A replica given another ``kek.json`` than the others would otherwise start, answer 500 on every request
    that opens a sealed value and loop on claiming operations. A sample of the newest sealed values per column
    (``broker.store.sealed.sample_by_kek``) names the KEK ids in use; one value per id is opened.
    """
    from broker.store.sealed import sample_by_kek

    try:
        samples = sample_by_kek(engine, Envelope.kek_id)
    except SQLAlchemyError as exc:
        raise SystemExit(database_error(str(engine.url), exc)) from None
    kek = envelope.kek
    for kid, (_table, value_aad, value) in sorted(samples.items()):
        if isinstance(kek, LocalKeyFile) and kid not in kek.key_ids():
            raise SystemExit(
                f"drbroker: the database's data keys are wrapped by KEK {kid}, which DRBROKER_KEK_FILE / "
                f"kek.json ({kek.path}) does not hold: give this replica the same kek.json as the others "
                "(or the same DRBROKER_KEK=keyprotect settings)")
        try:
            envelope.unseal(value, value_aad)
        except SecretsError as exc:
            raise SystemExit(f"drbroker: the configured KEK ({kek.name}) cannot open the database's data keys "
                             f"wrapped by {kid}: {exc}; give this replica the same KEK settings as the others"
                             ) from None


def make_authenticators(settings: Settings, runtime: Runtime) -> list[Any]:
    authenticators: list[Any] = []
    unknown = set(settings.auth) - {"basic", "bearer-crn"}
    if unknown or not settings.auth:
        raise SystemExit(f"DRBROKER_AUTH: unknown scheme(s) {', '.join(sorted(unknown)) or '(none)'} "
                         "(choose: basic, bearer-crn, or both comma-separated)")
    if "basic" in settings.auth:
        creds: list[BasicCredentials] = []
        if settings.username and settings.password:
            creds.append(BasicCredentials.from_plaintext(settings.username, settings.password))
            redaction.register_secret(settings.password)
        if settings.credentials_file:
            try:
                creds.extend(read_credentials_file(Path(settings.credentials_file)))
            except CredentialsError as exc:
                raise SystemExit(f"DRBROKER_CREDENTIALS_FILE: {exc}") from None
        if not creds:
            try:
                generated, password = load_or_create_credentials(settings.state_dir)
            except (CredentialsError, ValueError) as exc:
                raise SystemExit(f"generated credentials: {exc}") from None
            creds.append(generated)
            runtime.generated_username, runtime.generated_password = generated.username, password
        authenticators.append(BasicAuthenticator(*creds))
    if "bearer-crn" in settings.auth:
        if not settings.broker_crn:
            raise SystemExit("DRBROKER_AUTH=bearer-crn needs DRBROKER_BROKER_CRN (this broker's CRN)")
        authenticators.append(BearerCrnAuthenticator(iam_url=settings.iam_url, broker_crn=settings.broker_crn))
    return authenticators


def build_runtime(settings: Settings) -> Runtime:
    catalog = load_catalog(settings.catalog_path)
    engine = db.make_engine(settings.database_url)
    try:
        if db.is_sqlite(engine):
            db.upgrade(engine)
        elif db.needs_upgrade(engine):
            raise SystemExit("the database schema is not current: run `drbroker db upgrade`")
    except SQLAlchemyError as exc:
        raise SystemExit(database_error(settings.database_url, exc)) from None
    envelope = make_envelope(settings)
    check_data_keys(engine, envelope)
    store = Store(engine, sealer=envelope)
    audit = make_audit(settings, store)
    orchestrator = make_orchestrator(settings, store, audit)
    wf_engine = Engine(store, catalog, orchestrator)
    worker = Worker(store, wf_engine, lease_seconds=settings.lease_seconds, poll_seconds=settings.poll_seconds,
                    threads=settings.worker_threads)
    service = BrokerService(store, catalog, worker, orchestrator, public_url=settings.public_url,
                            sync_bind_timeout=settings.sync_bind_timeout,
                            account_instance_limit=settings.account_instance_limit)
    runtime = Runtime(settings=settings, store=store, catalog=catalog, orchestrator=orchestrator,
                      engine=wf_engine, worker=worker, service=service, audit=audit)
    runtime.refusals = RefusalLimiter(lambda event: audit.append(bounded(event)),
                                      per_client=settings.audit_refused_per_client,
                                      total=settings.audit_refused_per_minute)
    runtime.authenticators = make_authenticators(settings, runtime)
    runtime.meter = make_meter(settings, runtime)
    runtime.rpo_sampler = RpoSampler(store, orchestrator, interval=settings.rpo_sample_seconds,
                                     keep_seconds=sample_retention_seconds(settings))
    runtime.key_rotation = make_key_rotation(orchestrator)
    wf_engine.observer = metrics.MetricsObserver()
    from broker import jobs

    wf_engine.listeners = jobs.make_listeners(runtime)
    runtime.jobs = jobs.make_jobs(runtime)
    return runtime


def make_audit(settings: Settings, store: Store) -> AuditTrail:
    """The audit trail, its MAC key opened (created on the first start after the upgrade): a replica whose KEK
    cannot open it stops here, like one that cannot open the data keys."""
    from broker.security.audit_key import AuditKeyError

    trail = AuditTrail(store, checkpoint=settings.audit_checkpoint)
    try:
        trail.ensure_key()
    except AuditKeyError as exc:
        raise SystemExit(f"drbroker: audit trail: {exc}") from None
    except OSError as exc:
        raise SystemExit(f"DRBROKER_AUDIT_CHECKPOINT: {exc}") from None
    except SQLAlchemyError as exc:
        raise SystemExit(database_error(settings.database_url, exc)) from None
    return trail


def make_key_rotation(orchestrator: Orchestrator) -> Any:
    """The simulated Key Protect's rotation job (None on other backends)."""
    from broker.orchestrators.simulated.keyprotect import SimKeyProtect

    kp = getattr(orchestrator, "kp", None)
    if not isinstance(kp, SimKeyProtect):
        return None
    from broker.orchestrators.simulated.rotation import SimKeyRotation

    return SimKeyRotation(kp)


def make_meter(settings: Settings, runtime: Runtime) -> Any:
    """The usage meter, when the ibmcloud backend has a metering resource id (else None)."""
    if settings.orchestrator != "ibmcloud":
        return None
    from broker.orchestrators.ibmcloud.metering import UsageMeter

    config = runtime.orchestrator.config  # type: ignore[attr-defined]
    if not config.metering_resource_id:
        return None
    return UsageMeter(runtime.store, runtime.catalog, runtime.orchestrator.auth,  # type: ignore[attr-defined]
                      config.endpoints.url("metering"), config.metering_resource_id, region=config.region,
                      interval=config.metering_interval_seconds, hour_seconds=config.metering_hour_seconds)


def _error_response(error: BrokerError) -> tuple[Response, int] | Response:
    status = status_for(error)
    body = body_for(error, allow_usable_flags=request.endpoint in _USABLE_FLAG_ENDPOINTS)
    # /v2 errors carry only the fields of the request's version (set once the version header passed)
    response = jsonify(prune("error", body, g.osb_minor) if "osb_minor" in g else body)
    response.status_code = status
    if status == 401:
        runtime = current_app.extensions.get("drbroker")
        response.headers["WWW-Authenticate"] = runtime.challenges if runtime else 'Basic realm="drbroker"'
    return response


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> Flask:
    settings = settings or Settings.from_env()
    runtime = runtime or build_runtime(settings)
    app = Flask("broker")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["drbroker"] = runtime

    @app.before_request
    def _request_identity() -> None:
        g.request_identity = request.headers.get("X-Broker-API-Request-Identity") or None
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"body: larger than {MAX_BODY_BYTES} bytes")
        if length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            # Werkzeug stops reading a chunked body at MAX_CONTENT_LENGTH without an error, so an
            # oversized body would be parsed truncated. Read it now (get_data caches it for the views)
            # and refuse it if anything is left beyond the limit.
            data = request.get_data()
            if len(data) >= MAX_BODY_BYTES and request.environ["wsgi.input"].read(1):
                raise PayloadTooLarge(f"body: larger than {MAX_BODY_BYTES} bytes")

    app.before_request(metrics.before_request)
    app.after_request(metrics.after_request)

    @app.after_request
    def _echo(response: Response) -> Response:
        if (request.method != "GET" or response.status_code >= 400) and not api_audit.is_refused(response):
            # One line per mutating or failed request, carrying the request identity (never a body); a refused
            # mutating request has its own line (broker.api.audit).
            access_log.info("%s %s -> %s", request.method, request.path, response.status_code)
        ident = g.get("request_identity")
        if ident:
            response.headers["X-Broker-API-Request-Identity"] = ident
        return response

    # Every mutating request, refused ones included (bounded, at a bounded rate), appends a record to the
    # MAC-chained audit trail.
    app.after_request(api_audit.record)

    @app.errorhandler(BrokerError)
    def _broker_error(error: BrokerError) -> Any:
        return _error_response(error)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_error: RequestEntityTooLarge) -> Any:
        return _error_response(PayloadTooLarge(f"body: larger than {MAX_BODY_BYTES} bytes"))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        response = error.get_response()
        response.data = jsonify({"error": (error.name or "Error").replace(" ", ""),
                                 "description": error.description or error.name}).get_data()
        response.mimetype = "application/json"
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Any:
        log.exception("unexpected error on %s %s", request.method, request.path)
        response = jsonify({"error": "InternalError",
                            "description": "the broker hit an unexpected error; it has been logged"})
        response.status_code = 500
        return response

    for blueprint in (health.bp, osb.bp, ibm.bp, dashboard.bp, openapi.bp, metrics.bp):
        app.register_blueprint(blueprint)
    app.wsgi_app = RawPathMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app
