"""The one table from domain errors to OSB responses (broker.api.errors) is complete, every domain error
raised inside a view becomes its OSB answer, and an unexpected exception becomes a clean OSB 500."""

from __future__ import annotations

import logging
import re

import pytest

from broker.api.errors import STATUS, body_for, status_for
from broker.domain import errors as e
from tests.api.conftest import assert_error
from tests.conftest import GRS_PARAMS, GRS_PLAN, SERVICE_ID


def all_subclasses(cls: type) -> list[type]:
    found: list[type] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(all_subclasses(sub))
    return sorted(set(found), key=lambda c: c.__name__)


ERRORS = all_subclasses(e.BrokerError)


def test_the_walk_finds_the_documented_tree():
    names = {c.__name__ for c in ERRORS}
    assert {"BadRequest", "InvalidParameters", "Unauthorized", "NotFound", "Conflict", "Gone",
            "PayloadTooLarge", "VersionNotSupported", "Unprocessable", "AsyncRequired", "ConcurrencyError",
            "MaintenanceInfoConflict", "RequiresApp", "InstanceDisabled", "BackendError",
            "TransientBackendError", "PermanentBackendError", "ServiceUnavailable"} <= names


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_broker_error_has_a_status_other_than_500(cls):
    assert cls in STATUS, f"{cls.__name__} has no entry of its own in broker.api.errors.STATUS"
    status = status_for(cls("x"))
    assert status != 500
    assert 400 <= status < 600


def test_broker_error_itself_is_500():
    assert status_for(e.BrokerError("x")) == 500


@pytest.mark.parametrize("cls", [e.BrokerError, *ERRORS], ids=lambda c: c.__name__)
def test_every_broker_error_has_a_camelcase_osb_error_code(cls):
    assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", cls.error_code), cls.error_code


def test_osb_error_codes_are_the_spec_strings():
    assert e.AsyncRequired.error_code == "AsyncRequired"
    assert e.ConcurrencyError.error_code == "ConcurrencyError"
    assert e.MaintenanceInfoConflict.error_code == "MaintenanceInfoConflict"
    assert e.RequiresApp.error_code == "RequiresApp"
    assert status_for(e.AsyncRequired("x")) == status_for(e.ConcurrencyError("x")) == 422
    assert status_for(e.MaintenanceInfoConflict("x")) == status_for(e.RequiresApp("x")) == 422


def test_an_unmapped_subclass_inherits_its_parents_status():
    class Custom(e.Gone):
        pass

    assert status_for(Custom("x")) == 410


def test_usable_flags_appear_only_where_allowed():
    err = e.Unprocessable("x", instance_usable=False, update_repeatable=True)
    assert body_for(err, allow_usable_flags=False) == {"error": "UnprocessableEntity", "description": "x"}
    assert body_for(err, allow_usable_flags=True) == {"error": "UnprocessableEntity", "description": "x",
                                                      "instance_usable": False, "update_repeatable": True}


# --- through the app --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [e.BrokerError, *ERRORS], ids=lambda c: c.__name__)
def test_every_broker_error_raised_in_a_view_becomes_its_osb_response(osb, runtime, monkeypatch, cls):
    def boom(*_args, **_kwargs):
        raise cls(f"{cls.__name__} happened")

    monkeypatch.setattr(runtime.service, "get_instance", boom)
    r = osb.get("/v2/service_instances/i-1")
    body = assert_error(r, status_for(cls("x")), cls.error_code)
    assert body["description"] == f"{cls.__name__} happened"


@pytest.mark.parametrize(("method", "path", "flags"), [
    ("put", "/v2/service_instances/i-1?accepts_incomplete=true", False),
    ("patch", "/v2/service_instances/i-1?accepts_incomplete=true", True),
    ("delete", f"/v2/service_instances/i-1?service_id={SERVICE_ID}&plan_id={GRS_PLAN}&accepts_incomplete=true",
     True),
    ("put", "/v2/service_instances/i-1/service_bindings/b-1", False),
    ("delete", f"/v2/service_instances/i-1/service_bindings/b-1?service_id={SERVICE_ID}&plan_id={GRS_PLAN}",
     False),
])
def test_instance_usable_flags_only_on_update_and_deprovision_errors(osb, runtime, monkeypatch, method, path, flags):
    def refuse(*_args, **_kwargs):
        raise e.Unprocessable("refused", instance_usable=True, update_repeatable=False)

    for name in ("provision", "update", "deprovision", "bind", "unbind"):
        monkeypatch.setattr(runtime.service, name, refuse)
    body = {"service_id": SERVICE_ID, "plan_id": GRS_PLAN, "organization_guid": "o", "space_guid": "s",
            "parameters": GRS_PARAMS}
    r = osb.delete(path) if method == "delete" else getattr(osb, method)(path, body)
    result = assert_error(r, 422, "UnprocessableEntity")
    assert ("instance_usable" in result) is flags and ("update_repeatable" in result) is flags


@pytest.mark.parametrize("exc", [RuntimeError("db password=hunter2 at /srv/broker.py line 7"),
                                 KeyError("parameters"), ZeroDivisionError(), AssertionError("invariant")],
                         ids=lambda x: type(x).__name__)
def test_unknown_exception_in_a_view_is_a_clean_osb_500_without_traceback(osb, runtime, monkeypatch, caplog, exc):
    def boom(*_args, **_kwargs):
        raise exc

    monkeypatch.setattr(runtime.service, "provision", boom)
    with caplog.at_level(logging.ERROR, logger="drbroker"):
        r = osb.provision("i-1")
    body = assert_error(r, 500, "InternalError")
    text = r.get_data(as_text=True)
    assert set(body) == {"error", "description"}
    for leak in ("Traceback", "hunter2", "broker.py", "File \"", type(exc).__name__, "invariant"):
        assert leak not in text
    assert any(rec.exc_info for rec in caplog.records), "the unexpected error was not logged"


def test_unknown_exception_while_fetching_the_catalog_is_a_clean_osb_500(osb, runtime, monkeypatch):
    class Broken:
        @property
        def document_json(self):
            raise OSError("disk on fire")

    monkeypatch.setattr(runtime.service, "catalog", Broken())
    r = osb.get("/v2/catalog")
    assert_error(r, 500, "InternalError")
    assert "disk on fire" not in r.get_data(as_text=True)
