"""Composition root: settings -> store, catalog, orchestrator, engine, worker, service, Flask app.

This is the only module that knows the concrete classes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from broker.api import dashboard, health, ibm, osb
from broker.api.errors import body_for, status_for
from broker.api.rawpath import RawPathMiddleware
from broker.config import Settings
from broker.domain.catalog import Catalog, load_catalog
from broker.domain.errors import BrokerError, PayloadTooLarge, Unauthorized
from broker.domain.protocols import Orchestrator
from broker.security.basic import BasicAuthenticator, BasicCredentials, load_or_create_credentials
from broker.services.osb import BrokerService
from broker.store import db
from broker.store.repository import Store
from broker.workflows.engine import Engine
from broker.workflows.worker import Worker

log = logging.getLogger("drbroker")

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
    generated_credentials: BasicCredentials | None = None

    def authenticate(self) -> None:
        header = request.headers.get("Authorization")
        for auth in self.authenticators:
            principal = auth.authenticate(header)
            if principal:
                g.principal = principal
                return
        raise Unauthorized("authentication required" if not header else "invalid credentials")


def make_orchestrator(settings: Settings, store: Store) -> Orchestrator:
    if settings.orchestrator == "simulated":
        from broker.orchestrators.simulated.orchestrator import SimulatedOrchestrator

        return SimulatedOrchestrator(store.engine, step_seconds=settings.sim_step_seconds,
                                     faults=settings.sim_faults)
    raise SystemExit(f"DRBROKER_ORCHESTRATOR={settings.orchestrator!r} is not available "
                     "(choose: simulated)")


def build_runtime(settings: Settings) -> Runtime:
    catalog = load_catalog(settings.catalog_path)
    engine = db.make_engine(settings.database_url)
    if db.is_sqlite(engine):
        db.upgrade(engine)
    elif db.needs_upgrade(engine):
        raise SystemExit("the database schema is not current: run `drbroker db upgrade`")
    store = Store(engine)
    orchestrator = make_orchestrator(settings, store)
    wf_engine = Engine(store, catalog, orchestrator)
    worker = Worker(store, wf_engine, lease_seconds=settings.lease_seconds, poll_seconds=settings.poll_seconds,
                    threads=settings.worker_threads)
    service = BrokerService(store, catalog, worker, orchestrator, public_url=settings.public_url,
                            sync_bind_timeout=settings.sync_bind_timeout,
                            account_instance_limit=settings.account_instance_limit)
    runtime = Runtime(settings=settings, store=store, catalog=catalog, orchestrator=orchestrator,
                      engine=wf_engine, worker=worker, service=service)
    if "basic" in settings.auth:
        if settings.username and settings.password:
            creds = BasicCredentials(settings.username, settings.password)
        else:
            creds, _created = load_or_create_credentials(settings.state_dir)
            runtime.generated_credentials = creds
        runtime.authenticators.append(BasicAuthenticator(creds))
    unknown = set(settings.auth) - {"basic"}
    if unknown:
        raise SystemExit(f"DRBROKER_AUTH: unknown scheme(s) {', '.join(sorted(unknown))} (choose: basic)")
    return runtime


def _error_response(error: BrokerError) -> tuple[Response, int] | Response:
    status = status_for(error)
    response = jsonify(body_for(error, allow_usable_flags=request.endpoint in _USABLE_FLAG_ENDPOINTS))
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="drbroker"'
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

    @app.after_request
    def _echo(response: Response) -> Response:
        ident = g.get("request_identity")
        if ident:
            response.headers["X-Broker-API-Request-Identity"] = ident
        return response

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

    for blueprint in (health.bp, osb.bp, ibm.bp, dashboard.bp):
        app.register_blueprint(blueprint)
    app.wsgi_app = RawPathMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app
