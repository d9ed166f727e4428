"""Holding the fake to IBM's API definitions, one exchange at a time.

Before a handler runs, the request is matched to an operation of IBM's definition (``contracts``) and
its body checked against the operation's request model:

- a missing required field, or a value of the wrong type, is refused with a 400 in the service's error
  shape, as IBM's API validation answers it;
- a field the model does not define (misspelt, wrong case, invented) is *not* refused, because IBM's Go
  decoder ignores it (or case-folds it) and carries on, which is exactly how such a bug hides on a real
  account. It is recorded as a contract violation instead, and the contract tests fail on any violation.

After the handler, the answer is checked against the model of its status: any field the model does not
define, a required field missing, a wrong type, enum value or a zero value where Go omits the field is a
violation (the fake's own bug: it must answer as IBM does). Every exchange is kept (bounded) with its
bodies for ``/_fake/exchanges``; counts of operations and models checked are kept for reports.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from broker.fakecloud.contracts import Contract, Operation, Violation, load, service_of

MAX_EXCHANGES = 50_000
MAX_VIOLATIONS = 2_000

# Headers and fields whose values are secrets: recorded as "***".
_SECRET_FIELDS = ("apikey", "api_key", "orchestrator_password", "password", "plaintext", "access_token",
                  "refresh_token", "client_secret", "secret")


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("***" if k.lower() in _SECRET_FIELDS and v else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


@dataclass
class Recorder:
    contract: Contract = field(default_factory=load)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.exchanges: list[dict[str, Any]] = []
        self.violations: list[dict[str, Any]] = []
        self.operations: Counter[str] = Counter()
        self.models: set[str] = set()
        self.checked = 0

    # before the handler ---------------------------------------------------------------------------
    def request_problems(self, method: str, path: str, body: Any) -> tuple[Operation | None, list[Violation]]:
        """The operation, and the request violations IBM would refuse with a 400 (the rest are recorded)."""
        if service_of(path) not in self.contract.services:
            return None, []
        op = self.contract.match(method, path)
        if op is None:
            v = Violation(service_of(path), "?", "request", "", f"no operation {method} {path} in IBM's definition")
            self._violate([v], method, path)
            return None, []
        found = self.contract.check_request(op, body)
        refused = [v for v in found if not v.message.startswith("Additional properties")]
        ignored = [v for v in found if v.message.startswith("Additional properties")]
        self._violate(ignored, method, path)
        return op, refused

    # after the handler ----------------------------------------------------------------------------
    def record(self, op: Operation | None, method: str, path: str, query: str, request_body: Any, status: int,
               response_body: Any, transaction_id: str) -> list[Violation]:
        found: list[Violation] = []
        if op is not None:
            found = self.contract.check_response(op, status, response_body)
            defined, model = op.answer_model(status)
            with self.lock:
                self.checked += 1
                self.operations[f"{op.service} {op.id}"] += 1
                if op.body is not None and request_body is not None and "$ref" in op.body:
                    self.models.add(f"{op.service}:{op.body['$ref'].rsplit('/', 1)[1]}")
                if defined and model and response_body is not None:
                    self.models.add(f"{op.service}:{model}")
            self._violate(found, method, path, status)
        entry = {"at": time.time(), "service": service_of(path), "operation": op.id if op else None,
                 "method": method, "path": path, "query": query, "status": status,
                 "request": _redact(request_body), "response": _redact(response_body),
                 "transaction_id": transaction_id}
        with self.lock:
            self.exchanges.append(entry)
            if len(self.exchanges) > MAX_EXCHANGES:
                del self.exchanges[: len(self.exchanges) - MAX_EXCHANGES]
        return found

    def _violate(self, found: list[Violation], method: str, path: str, status: int | None = None) -> None:
        if not found:
            return
        with self.lock:
            for v in found:
                if len(self.violations) < MAX_VIOLATIONS:
                    self.violations.append({"service": v.service, "operation": v.operation, "where": v.where,
                                            "path": v.path, "message": v.message, "method": method,
                                            "url": path, "status": status, "text": str(v)})

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {"exchanges_checked": self.checked, "operations": dict(sorted(self.operations.items())),
                    "operations_exercised": len(self.operations), "models_checked": sorted(self.models),
                    "violations": list(self.violations)}

    def reset(self) -> None:
        with self.lock:
            self.exchanges.clear()
            self.violations.clear()
            self.operations.clear()
            self.models.clear()
            self.checked = 0


def json_body(raw: bytes, content_type: str | None) -> Any:
    """The JSON a request or answer carries (None when it carries none or not JSON)."""
    if not raw:
        return None
    if content_type and "json" not in content_type:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
