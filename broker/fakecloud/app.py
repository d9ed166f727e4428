"""The fake IBM Cloud's HTTP surface: the subset of IBM's APIs the ibmcloud backend uses, each under its real
path, with the documented request checks, status codes and each service's own error body:

- IAM token: ``POST /identity/token`` (API key and trusted-profile assume grants)
- PowerVS: ``/pcloud/v1/cloud-instances/{id}/...`` (+ ``/pcloud/v2`` volume clones); ``CRN`` header required
- Key Protect: ``/api/v2/key_rings``, ``/api/v2/keys...``; ``Bluemix-Instance`` header required
- IAM identity and policies: ``/v1/serviceids/``, ``/v1/apikeys``, ``/v1/policies``
- resource controller ``/v2/resource_instances``; global catalog ``/api/v1``
- DR Automation ``/drautomation/v1/...``; usage metering ``/v4/metering/resources/{id}/usage``
- Event Notifications ``POST /v1/instances/{id}/notifications`` (``event_notifications``)

Not IBM's: ``/_fake/...`` to inject faults (``POST /_fake/faults``), read the state and the request log.

This module holds the app and its middleware (fault injection, token checks, transaction ids, the request log,
each service's error body); every service's routes are in a module of its own (``iam``, ``powervs``, ``kms``,
``platform``, ``dra``, ``admin``), each adding them with ``register(app, state)`` at the same paths.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from flask import Flask, Response, g, jsonify, request

from broker.fakecloud import admin, dra, event_notifications, iam, kms, platform, powervs
from broker.fakecloud.contracts import service_of
from broker.fakecloud.recorder import Recorder, json_body
from broker.fakecloud.state import (
    FakeError,
    FakeState,
)

__all__ = ["create_app", "error_body", "service_of"]

def error_body(service: str, status: int, code: str, message: str, tid: str) -> dict[str, Any]:
    if service == "powervs":
        return {"code": status, "description": message, "error": code, "message": message}
    if service == "kms":
        return {"metadata": {"collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1},
                "resources": [{"errorMsg": message, "reasons": [
                    {"code": code, "message": message, "status": status,
                     "moreInfo": "https://cloud.ibm.com/apidocs/key-protect"}]}]}
    if service == "iam_token":
        return {"errorCode": code, "errorMessage": message, "context": {"requestId": tid}}
    return {"trace": tid, "errors": [{"code": code, "message": message}], "status_code": status}


def create_app(state: FakeState) -> Flask:
    app = Flask("fakecloud")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    S = state
    if getattr(S, "recorder", None) is None:
        S.recorder = Recorder()  # type: ignore[attr-defined]

    # middleware -----------------------------------------------------------------------------------
    @app.before_request
    def _enter() -> Any:
        g.tid = f"fake-{uuid.uuid4()}"
        g.service = service_of(request.path)
        if g.service == "admin":
            return None
        with S.lock:
            fault = next((f for f in S.faults if f.matches(g.service, request.method, request.path)), None)
            if fault is not None:
                fault.count -= 1
                fault.hits += 1
            lost = next((f for f in S.faults if f.matches(g.service, request.method, request.path, after=True)),
                        None)
            if lost is not None:
                lost.count -= 1
                lost.hits += 1
                g.lost_answer = lost
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status:
                headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                message = f"injected fault {fault.id}: HTTP {fault.status}"
                if fault.echo:
                    message += f": refused {request.get_data(as_text=True)[:2000]}"
                raise FakeError(fault.status, "injected_fault", message, headers)
        S.lock.acquire()
        g.locked = True
        S.tick()
        if g.service not in ("iam_token", "unknown"):
            g.claims = S.check_token(request.headers.get("Authorization"))
        g.request_json = json_body(request.get_data(cache=True), request.content_type)
        g.op, refused = S.recorder.request_problems(request.method, request.path, g.request_json)
        if refused:
            # IBM's API validation refuses a body that lacks a required field or has a wrongly typed one.
            raise FakeError(400, "validation_failed", "validation failure list: " + "; ".join(
                f"{v.path.removeprefix('$.') or 'body'}: {v.message}" for v in refused))
        return None

    @app.teardown_request
    def _leave(_exc: BaseException | None) -> None:
        if g.get("locked"):
            g.locked = False
            S.lock.release()

    @app.after_request
    def _tag(response: Response) -> Response:
        tid = g.get("tid") or f"fake-{uuid.uuid4()}"
        response.headers["X-Global-Transaction-Id"] = tid
        if request.headers.get("Transaction-Id"):
            response.headers["Transaction-Id"] = request.headers["Transaction-Id"]
        if g.get("service") == "kms":
            response.headers["Correlation-Id"] = request.headers.get("Correlation-Id") or tid
        if g.get("service") != "admin":
            S.requests.append({"method": request.method, "path": request.path, "status": response.status_code,
                               "transaction_id": tid, "service": g.get("service"), "at": time.time()})
            del S.requests[:-2000]
            answer = json_body(response.get_data(), response.content_type) if not response.is_streamed else None
            S.recorder.record(g.get("op"), request.method, request.path, request.query_string.decode(),
                              g.get("request_json"), response.status_code, answer, tid)
            lost = g.get("lost_answer")
            if lost is not None:
                return _lose(response, lost, tid)
        return response

    def _lose(response: Response, fault: Any, tid: str) -> Response:
        """The request took effect; now its answer is lost (connection closed) or replaced by an error."""
        if fault.drop:
            sock = request.environ.get("werkzeug.socket")
            if sock is not None:
                import socket

                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return Response(status=500)
        body = error_body(g.get("service") or "", fault.status, "injected_fault",
                          f"injected fault {fault.id}: HTTP {fault.status} after the request took effect", tid)
        lost = jsonify(body)
        lost.status_code = fault.status
        lost.headers["X-Global-Transaction-Id"] = tid
        return lost

    @app.errorhandler(FakeError)
    def _fake_error(exc: FakeError) -> Any:
        body = error_body(g.get("service") or service_of(request.path), exc.status, exc.code, exc.message,
                          g.get("tid", ""))
        resp = jsonify(body)
        resp.status_code = exc.status
        for k, v in exc.headers.items():
            resp.headers[k] = v
        return resp

    @app.errorhandler(404)
    def _not_found(_e: Any) -> Any:
        return _fake_error(FakeError(404, "not_found", f"no route {request.method} {request.path}"))

    @app.errorhandler(405)
    def _not_allowed(_e: Any) -> Any:
        return _fake_error(FakeError(405, "method_not_allowed", f"{request.method} not allowed on {request.path}"))

    # each IBM service's routes, from its own module -----------------------------------------------
    for service in (iam, powervs, kms, platform, dra, event_notifications, admin):
        service.register(app, S)
    return app
