"""Fault injection for the simulated cloud, from ``DRBROKER_SIM_FAULTS``.

Syntax: comma-separated ``action=kind[:n]`` where kind is
``transient:N`` (the first N calls per operation raise a 503-like error), ``throttle:N`` (the first N calls
raise a 429-like error with a retry hint), ``fail`` (every call fails permanently) or ``latency:S``
(every call takes S more seconds). Example: ``create_replication_group=transient:3,wrap_key=fail``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from broker.domain.errors import PermanentBackendError, TransientBackendError


@dataclass(frozen=True)
class Fault:
    kind: str
    amount: float = 0.0


def parse_faults(spec: str) -> dict[str, list[Fault]]:
    faults: dict[str, list[Fault]] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        action, sep, rule = item.partition("=")
        kind, _, amount = rule.partition(":")
        if not sep or kind not in ("transient", "throttle", "fail", "latency"):
            raise ValueError(f"DRBROKER_SIM_FAULTS: cannot read {item!r} (want action=transient:N|throttle:N|"
                             "fail|latency:SECONDS)")
        try:
            value = float(amount) if amount else (1.0 if kind in ("transient", "throttle") else 0.0)
        except ValueError:
            raise ValueError(f"DRBROKER_SIM_FAULTS: {item!r}: {amount!r} is not a number") from None
        faults.setdefault(action.strip(), []).append(Fault(kind, value))
    return faults


class FaultInjector:
    def __init__(self, spec: str) -> None:
        self._faults = parse_faults(spec)
        self._calls: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._faults)

    def before(self, action: str, operation_id: str) -> None:
        faults = self._faults.get(action)
        if not faults:
            return
        with self._lock:
            key = (action, operation_id)
            self._calls[key] = calls = self._calls.get(key, 0) + 1
        for fault in faults:
            if fault.kind == "latency":
                time.sleep(fault.amount)
            elif fault.kind == "fail":
                raise PermanentBackendError(f"{action} failed (injected permanent fault)")
            elif fault.kind == "transient" and calls <= fault.amount:
                raise TransientBackendError(f"{action}: 503 Service Unavailable (injected, call {calls})")
            elif fault.kind == "throttle" and calls <= fault.amount:
                raise TransientBackendError(f"{action}: 429 Too Many Requests (injected, call {calls})",
                                            retry_after=0.05)
