"""``drbroker serve``: the broker on gunicorn, with the operation worker in each process.

gunicorn manages the worker processes; each serves HTTP through the front (broker.front: waitress with
header and body deadlines and a connection cap, TLS included). SIGTERM drains: the front stops accepting,
lets in-flight requests finish, and our ``worker_exit`` hook stops the operation worker at its next step
boundary, releasing its lease so the next start (or another replica) resumes at once.
"""

from __future__ import annotations

import logging
import signal
import ssl
import sys
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from broker import logs
from broker.app import Runtime, build_runtime, create_app
from broker.config import Settings
from broker.front.settings import FrontSettings
from broker.front.tls import server_context
from broker.security import redaction
from broker.security.filemodes import InsecureFileError, check_private

log = logging.getLogger("drbroker")


def configure_logging(level: str, fmt: str = "text") -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logs.formatter(fmt))
        handler.addFilter(logs.RequestIdentityFilter())
    # Even at DEBUG: SQLAlchemy would log every statement (its logger follows the root level), and
    # openbrokerapi's blueprint dumps request headers and bodies at DEBUG. Neither is used that way here;
    # pin both anyway, and scrub whatever reaches a handler (broker.security.redaction).
    for name in ("sqlalchemy.engine", "sqlalchemy.pool", "openbrokerapi"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Alembic says which dialect it uses on every start; only the migrations it runs are worth a line.
    migration_log = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(f, _AlembicChatter) for f in migration_log.filters):
        migration_log.addFilter(_AlembicChatter())
    redaction.install()


class _AlembicChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Context impl", "Will assume"))


class RedactingGunicornLogger(GunicornLogger):
    """gunicorn's logger with the redaction filter on its own handlers (they do not go through the root)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        redaction.install(self.error_log, self.access_log)


def _runtime(worker: Any) -> Runtime:
    app = worker.wsgi
    return app.extensions["drbroker"]


def _post_worker_init(worker: Any) -> None:
    runtime = _runtime(worker)
    runtime.worker.start()
    if runtime.meter is not None:
        runtime.meter.start()
    runtime.rpo_sampler.start()
    if runtime.key_rotation is not None:
        runtime.key_rotation.start()
    for job in runtime.jobs:
        job.start()
    # On SIGTERM gunicorn stops accepting and lets requests in flight finish; the operation worker must stop
    # at its next step boundary now, not only after that drain (worker_exit), or it starts new steps while
    # draining and may be killed in the middle of one when graceful_timeout runs out.
    previous = signal.getsignal(signal.SIGTERM)

    def _on_sigterm(signum: int, frame: Any) -> None:
        runtime.worker.request_stop()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, _on_sigterm)


def _worker_exit(_server: Any, worker: Any) -> None:
    try:
        runtime = _runtime(worker)
    except (AttributeError, KeyError):
        return
    runtime.worker.stop(timeout=25)
    if runtime.meter is not None:
        runtime.meter.stop()
    runtime.rpo_sampler.stop()
    if runtime.key_rotation is not None:
        runtime.key_rotation.stop()
    for job in runtime.jobs:
        job.stop()
    runtime.store.engine.dispose()


def _child_exit(_server: Any, worker: Any) -> None:
    """A dead worker's live-gauge files must not count any more (prometheus-client multiprocess mode)."""
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


class BrokerServer(BaseApplication):
    def __init__(self, settings: Settings, host: str, port: int, workers: int = 1,
                 certfile: str | None = None, keyfile: str | None = None,
                 front: FrontSettings | None = None) -> None:
        self.settings = settings
        # Read by each worker (broker.front.worker.FrontWorker) after the fork.
        self.front_settings = front or FrontSettings.from_env()
        self.tls_files = (certfile, keyfile) if certfile and keyfile else None
        self.options = {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": "broker.front.worker.FrontWorker",
            "graceful_timeout": 30,
            "timeout": 120,
            "post_worker_init": _post_worker_init,
            "worker_exit": _worker_exit,
            "child_exit": _child_exit,
            "accesslog": None,
            # gunicorn >= 24 opens a control socket at a fixed per-user path; two brokers would collide.
            "control_socket_disable": True,
            "loglevel": settings.log_level.lower(),
            "logger_class": RedactingGunicornLogger,
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        configure_logging(self.settings.log_level, self.settings.log_format)
        return create_app(self.settings)


def serve(settings: Settings, host: str, port: int, workers: int = 1, *, certfile: str | None = None,
          keyfile: str | None = None) -> None:
    configure_logging(settings.log_level, settings.log_format)
    front = FrontSettings.from_env()
    if keyfile:
        try:
            check_private(keyfile)  # the TLS private key: nobody else may read it (broker.security.filemodes)
        except InsecureFileError as exc:
            raise SystemExit(f"--keyfile: {exc}") from None
    if certfile and keyfile:
        try:
            server_context(certfile, keyfile)  # each worker builds its own; a bad pair stops start-up here
        except (OSError, ssl.SSLError) as exc:
            raise SystemExit(f"--certfile/--keyfile: {exc}") from None
    # Fail fast in the master: a broken catalog or database stops start-up with a clear message, and
    # migrations run once rather than racing in every worker.
    runtime = build_runtime(settings)
    log.warning("orchestrator: %s", runtime.orchestrator.describe())
    path = settings.state_dir / "credentials.json"
    if runtime.generated_password is not None:
        # Printed this once: the file keeps only its scrypt hash.
        print(f"drbroker: basic-auth credentials (generated now; {path} keeps only a hash of the password, "
              f"so note it):\n  username: {runtime.generated_username}\n  password: {runtime.generated_password}",
              flush=True)
    elif runtime.generated_username is not None:
        print(f"drbroker: basic-auth user {runtime.generated_username!r} (password printed when {path} was "
              "created; delete that file and restart for a new one)", flush=True)
    scheme = "https" if certfile and keyfile else "http"
    print(f"drbroker: serving OSB 2.12-2.17 on {scheme}://{host}:{port} "
          f"({workers} worker process{'es' if workers > 1 else ''})", flush=True)
    runtime.store.engine.dispose()
    BrokerServer(settings, host, port, workers, certfile=certfile, keyfile=keyfile, front=front).run()
