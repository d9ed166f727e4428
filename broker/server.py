"""``drbroker serve``: the broker on gunicorn (threaded workers), with the operation worker in each process.

SIGTERM drains: gunicorn stops accepting, lets in-flight requests finish, and our ``worker_exit`` hook
stops the operation worker at its next step boundary, releasing its lease so the next start (or another
replica) resumes at once.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from broker.app import Runtime, build_runtime, create_app
from broker.config import Settings

log = logging.getLogger("drbroker")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")


def _runtime(worker: Any) -> Runtime:
    app = worker.wsgi
    return app.extensions["drbroker"]


def _post_worker_init(worker: Any) -> None:
    _runtime(worker).worker.start()


def _worker_exit(_server: Any, worker: Any) -> None:
    try:
        runtime = _runtime(worker)
    except (AttributeError, KeyError):
        return
    runtime.worker.stop(timeout=25)
    runtime.store.engine.dispose()


class BrokerServer(BaseApplication):
    def __init__(self, settings: Settings, host: str, port: int, workers: int = 1, threads: int = 8,
                 certfile: str | None = None, keyfile: str | None = None) -> None:
        self.settings = settings
        self.options = {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": "gthread",
            "threads": threads,
            "graceful_timeout": 30,
            "timeout": 120,
            "keepalive": 5,
            "post_worker_init": _post_worker_init,
            "worker_exit": _worker_exit,
            "accesslog": None,
            # gunicorn >= 24 opens a control socket at a fixed per-user path; two brokers would collide.
            "control_socket_disable": True,
            "loglevel": settings.log_level.lower(),
        }
        if certfile and keyfile:
            self.options.update(certfile=certfile, keyfile=keyfile)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        configure_logging(self.settings.log_level)
        return create_app(self.settings)


def serve(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    configure_logging(settings.log_level)
    # Fail fast in the master: a broken catalog or database stops start-up with a clear message, and
    # migrations run once rather than racing in every worker.
    runtime = build_runtime(settings)
    log.warning("orchestrator: %s", runtime.orchestrator.describe())
    if runtime.generated_credentials is not None:
        creds = runtime.generated_credentials
        path = settings.state_dir / "credentials.json"
        print(f"drbroker: basic-auth credentials (generated, stored in {path}):\n"
              f"  username: {creds.username}\n  password: {creds.password}", flush=True)
    print(f"drbroker: serving OSB 2.12-2.17 on http://{host}:{port} "
          f"({workers} worker process{'es' if workers > 1 else ''})", flush=True)
    runtime.store.engine.dispose()
    BrokerServer(settings, host, port, workers).run()
