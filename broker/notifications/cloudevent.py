"""A DR event as a CloudEvents 1.0 event (structured mode, ``application/cloudevents+json``), and as text for
e-mail. The event's ``data`` never carries secrets (the event log's rule), so neither form does."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

TYPE_PREFIX = "com.ibm.powervs-dr."
CONTENT_TYPE = "application/cloudevents+json"


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cloudevent(event: Mapping[str, Any], source: str) -> dict[str, Any]:
    subject = event.get("instance_id")
    out: dict[str, Any] = {
        "specversion": "1.0",
        "id": event["id"],
        "source": f"{source}/v2/service_instances/{subject}" if subject else source,
        "type": TYPE_PREFIX + event["type"],
        "time": iso(float(event["at"])),
        "datacontenttype": "application/json",
        "data": {"type": event["type"], "severity": event["severity"], "summary": event["summary"],
                 "seq": event["seq"], "instance_id": subject, "binding_id": event.get("binding_id"),
                 "operation_id": event.get("operation_id"), "details": event.get("data") or {}},
    }
    if subject:
        out["subject"] = subject
    return out


def body(event: Mapping[str, Any], source: str) -> bytes:
    return json.dumps(cloudevent(event, source), sort_keys=True, separators=(",", ":")).encode()


def subject_line(event: Mapping[str, Any]) -> str:
    where = f" on instance {event['instance_id']}" if event.get("instance_id") else ""
    return f"[powervs-dr] {event['severity']}: {event['type']}{where}"


def text(event: Mapping[str, Any]) -> str:
    lines = [event["summary"], "",
             f"Event:     {event['type']} ({event['severity']})",
             f"Time:      {iso(float(event['at']))}",
             f"Instance:  {event.get('instance_id') or '-'}"]
    if event.get("operation_id"):
        lines.append(f"Operation: {event['operation_id']}")
    lines += [f"Event id:  {event['id']} (seq {event['seq']})", "",
              "Details:", json.dumps(event.get("data") or {}, indent=2, sort_keys=True), "",
              "This message comes from the PowerVS DR service broker's DR event log."]
    return "\n".join(lines)
