"""The fake's own ``/_fake/...`` routes (not IBM's): inject faults, change its timing, read its state and logs.

The middleware neither injects faults into nor logs these routes, nor asks them for a token.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Flask, Response, jsonify

from broker.fakecloud.common import json_body
from broker.fakecloud.state import (
    CYCLE_PERIOD_SECONDS,
    DEMO_KMS_INSTANCE_ID,
    FakeError,
    FakeState,
    Fault,
)


def register(app: Flask, S: FakeState) -> None:
    """Add this service's routes to the fake's ``app``, serving from ``S``."""
    # admin (not IBM's) ----------------------------------------------------------------------------
    @app.post("/_fake/faults")
    def add_fault() -> Any:
        body = json_body()
        with S.lock:
            if body.get("expire_tokens"):
                S.revoked_before = time.time()
                return jsonify({"expired_tokens": True}), 201
            if body.get("fail_next"):
                kind = body["fail_next"]
                kinds = ("onboarding", "clone", "dra_deploy", "volume_group", "volume_group_partial")
                if kind not in kinds:
                    raise FakeError(400, "bad_fault", "fail_next: " + ", ".join(kinds))
                S.fail_next[kind] = S.fail_next.get(kind, 0) + int(body.get("count", 1))
                return jsonify({"fail_next": S.fail_next}), 201
            fault = Fault(id=len(S.faults) + 1, status=int(body.get("status", 503)), count=int(body.get("count", 1)),
                          service=body.get("service"), method=body.get("method"), path=body.get("path"),
                          retry_after=body.get("retry_after"), delay=float(body.get("delay", 0)),
                          after=bool(body.get("after") or body.get("drop")), drop=bool(body.get("drop")),
                          echo=bool(body.get("echo")))
            S.faults.append(fault)
            return jsonify(fault.__dict__), 201

    @app.get("/_fake/faults")
    def list_faults() -> Any:
        with S.lock:
            return jsonify({"faults": [f.__dict__ for f in S.faults], "fail_next": S.fail_next})

    @app.delete("/_fake/faults")
    def clear_faults() -> Any:
        with S.lock:
            S.faults.clear()
            S.fail_next.clear()
        return "", 204

    @app.post("/_fake/config")
    def config() -> Any:
        body = json_body()
        with S.lock:
            if "step_seconds" in body:
                S.step_seconds = float(body["step_seconds"])
            if "token_ttl" in body:
                S.token_ttl = int(body["token_ttl"])
            if "kms_dual_auth_seconds" in body:  # Key Protect's dual-authorisation period (IBM: 7 days)
                S.kms_dual_auth_seconds = float(body["kms_dual_auth_seconds"])
        return jsonify({"step_seconds": S.step_seconds, "token_ttl": S.token_ttl,
                        "kms_dual_auth_seconds": S.kms_dual_auth_seconds})

    @app.get("/_fake/requests")
    def requests_log() -> Any:
        with S.lock:
            return jsonify({"requests": list(S.requests)})

    @app.get("/_fake/contract")
    def contract() -> Any:
        """How the exchanges so far kept IBM's definitions: counts and every violation."""
        return jsonify(S.recorder.summary())

    @app.get("/_fake/exchanges")
    def exchanges() -> Any:
        with S.recorder.lock:
            return Response(json.dumps({"exchanges": list(S.recorder.exchanges)}, default=str),
                            mimetype="application/json")

    @app.delete("/_fake/exchanges")
    def reset_exchanges() -> Any:
        S.recorder.reset()
        return "", 204

    @app.get("/_fake/usage")
    def usage_log() -> Any:
        with S.lock:
            return jsonify({"usage": list(S.usage.values())})

    @app.get("/_fake/state")
    def dump() -> Any:
        with S.lock:
            S.tick()
            return Response(json.dumps(S.snapshot(), default=str, indent=1), mimetype="application/json")

    @app.get("/_fake/healthz")
    def healthz() -> Any:
        return jsonify({"ok": True, "kms_instance_id": DEMO_KMS_INSTANCE_ID, "cycle_period_seconds":
                        CYCLE_PERIOD_SECONDS})
