"""The broker's DR-evidence parts, plugged into the composition root by name.

Each entry of ``JOBS`` is ``"module:function"``; the function takes the ``Runtime`` and returns a
``PeriodicJob`` (or None when its part is not configured). Every serving process starts each job with its
operation worker (``broker.server``), and ``drbroker jobs run-due`` runs each one's ``run_once`` once, for a
scheduler outside the broker (a Code Engine cron subscription). Every job claims its due rows with leases, so
any number of processes may run them.

Each entry of ``LISTENERS`` likewise returns an engine listener (``broker.workflows.engine.Engine.listeners``)
or None: what it writes commits in the transaction that records an operation's start, success or failure.
"""

from __future__ import annotations

import importlib
from typing import Any

JOBS: tuple[str, ...] = (
    "broker.rehearsals.scheduler:make_job",
    "broker.notifications.job:make_job",
    "broker.evidence.export:make_job",
)

LISTENERS: tuple[str, ...] = (
    "broker.events.listener:make_listener",
    "broker.rehearsals.sync:make_listener",
    "broker.evidence.snapshots:make_listener",
)


def _load(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def make_jobs(runtime: Any) -> list[Any]:
    return [job for job in (_load(ref)(runtime) for ref in JOBS) if job is not None]


def make_listeners(runtime: Any) -> list[Any]:
    return [item for item in (_load(ref)(runtime) for ref in LISTENERS) if item is not None]
