"""SQL tables of the broker (SQLAlchemy Core). The Alembic migrations must produce exactly this schema;
``tests/store/test_migrations.py`` compares them."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

ID = 255  # OSB ids are opaque; IBM's URL-encoded CRNs run to ~150 characters.

instances = Table(
    "instances",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("service_id", String(ID), nullable=False),
    Column("plan_id", String(ID), nullable=False),
    # provisioning | ready | failed | deprovisioning | gone
    Column("state", String(32), nullable=False),
    Column("parameters", Text, nullable=False, default="{}"),
    Column("context", Text, nullable=False, default="{}"),
    Column("organization_guid", String(ID)),
    Column("space_guid", String(ID)),
    Column("maintenance_version", String(64)),
    Column("dashboard_url", Text),
    Column("request_hash", Text, nullable=False),  # sealed (broker.store.sealed)
    Column("enabled", Boolean, nullable=False, default=True),
    Column("last_active", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # What the broker knows of the DR situation: active site, rehearsal in progress, last rehearsal and RTO.
    Column("dr_state", Text, nullable=False, default="{}", server_default="{}"),
    # The customer account of the protected sites, for the per-account instance limit.
    Column("account_id", String(64)),
    Index("ix_instances_account", "account_id", "state"),
)

bindings = Table(
    "bindings",
    metadata,
    Column("instance_id", String(ID), primary_key=True),
    Column("id", String(ID), primary_key=True),
    Column("service_id", String(ID), nullable=False),
    Column("plan_id", String(ID), nullable=False),
    # binding | bound | failed | unbinding | gone
    Column("state", String(32), nullable=False),
    Column("parameters", Text, nullable=False, default="{}"),
    Column("bind_resource", Text, nullable=False, default="{}"),
    Column("context", Text, nullable=False, default="{}"),
    Column("credentials", Text),
    Column("request_hash", Text, nullable=False),  # sealed (broker.store.sealed)
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # binding rotation (migration 0009)
    Column("predecessor_binding_id", String(ID)),
    Column("identity_binding_id", String(ID)),
    Column("expires_at", Float),
    Column("renew_before", Float),
)

operations = Table(
    "operations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("instance_id", String(ID), nullable=False),
    Column("binding_id", String(ID)),
    # provision | update | deprovision | bind | unbind
    Column("type", String(32), nullable=False),
    # queued | in_progress | succeeded | failed
    Column("state", String(32), nullable=False),
    Column("description", Text),
    Column("plan_id", String(ID), nullable=False),
    Column("step_index", Integer, nullable=False, default=0),
    Column("step_total", Integer, nullable=False, default=0),
    Column("step_started_at", Float),
    Column("request_hash", Text, nullable=False),  # sealed (broker.store.sealed)
    Column("payload", Text, nullable=False, default="{}"),
    Column("originating_identity", Text),
    Column("request_identity", String(ID)),
    Column("principal", String(ID)),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("blocked_by", String(64)),
    Column("lease_owner", String(128)),
    Column("lease_until", Float),
    Column("heartbeat_at", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("error", Text),
    Index("ix_operations_instance", "instance_id", "created_at"),
    Index("ix_operations_state", "state", "lease_until"),
)

operation_steps = Table(
    "operation_steps",
    metadata,
    Column("operation_id", String(64), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("name", String(128), nullable=False),
    # running | done | failed | compensated
    Column("state", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("outputs", Text, nullable=False, default="{}"),
    Column("error", Text),
)

sim_resources = Table(
    "sim_resources",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(64), nullable=False),
    # Deterministic per instance/binding/step, so a retried step finds what it made before.
    Column("name", String(512), nullable=False),
    Column("instance_id", String(ID), nullable=False),
    Column("binding_id", String(ID)),
    Column("state", String(64), nullable=False),
    Column("data", Text, nullable=False, default="{}"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ux_sim_resources_kind_name", "kind", "name", unique=True),
    Index("ix_sim_resources_instance", "instance_id"),
)

audit_events = Table(
    "audit_events",
    metadata,
    # A sequence number assigned by the appender (the previous record's id + 1), part of the hash.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("at", Float, nullable=False),
    Column("principal", String(ID)),
    Column("originating_identity", Text),
    Column("request_identity", String(ID)),
    # provision | update | deprovision | bind | unbind | dr_action:<type> | bluemix_v1:<enable|disable> | ...
    Column("action", String(64), nullable=False),
    Column("instance_id", String(ID)),
    Column("binding_id", String(ID)),
    Column("operation_id", String(64)),
    Column("status", Integer),
    # ok | created | accepted | the OSB error code
    Column("outcome", String(64)),
    # What was asked, without values that could be secrets (parameter names, plan, path).
    Column("detail", Text, nullable=False, default="{}"),
    # hash = sha256(prev_hash + canonical JSON of the record); the first record's prev_hash is 64 zeros.
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # How ``hash`` links the record (broker.security.audit): "sha256" (records written before the chain was
    # keyed) or "hmac-sha256" (HMAC under the audit MAC key). No default, so that a broker that predates the
    # keyed chain cannot append unkeyed records after it.
    Column("chain", String(16), nullable=False),
    Index("ux_audit_events_prev_hash", "prev_hash", unique=True),
    Index("ix_audit_events_at", "at"),
)

# The audit trail's MAC key, generated once, sealed under the KEK (broker.security.audit_key).
audit_keys = Table(
    "audit_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("sealed", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Usage metering (paid plans, ibmcloud backend): one row per instance and hour, claimed before it is sent
# (state sending, with a lease), so every hour is reported once whatever the number of processes.
metering_records = Table(
    "metering_records",
    metadata,
    Column("instance_id", String(ID), primary_key=True),
    # start of the metered hour, epoch seconds
    Column("hour_start", Integer, primary_key=True),
    Column("plan_id", String(ID), nullable=False),
    Column("resource_instance_id", String(ID), nullable=False),
    # sending | sent | rejected
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("lease_until", Float),
    Column("transaction_id", String(ID)),
    Column("error", Text),
    Column("sent_at", Float),
    Column("updated_at", Float, nullable=False),
    Index("ix_metering_records_state", "state"),
)


rpo_samples = Table(
    "rpo_samples",
    metadata,
    Column("instance_id", String(ID), primary_key=True),
    # Start of the sampling interval: one row per instance and interval, whichever process wrote it.
    Column("at", Float, primary_key=True),
    Column("achieved_rpo_seconds", Float),
    Column("replication_state", String(64), nullable=False),
    Index("ix_rpo_samples_at", "at"),
)


# --- DR evidence (migration 0008) ---------------------------------------------------------------------------
# One typed record per DR fact (broker.events), written in the transaction of the state change that causes it.
# ``seq`` is assigned max + 1 under the writer lock (BEGIN IMMEDIATE; an advisory lock on PostgreSQL), so
# events commit in seq order and a reader that has seen seq N has seen every event before it: the exports and
# the notification dispatcher follow seq with a cursor and never skip one.
dr_events = Table(
    "dr_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("id", String(36), nullable=False),
    Column("at", Float, nullable=False),
    # one of broker.events.types.EVENT_TYPES
    Column("type", String(64), nullable=False),
    # info | warning | critical
    Column("severity", String(16), nullable=False),
    Column("instance_id", String(ID)),
    Column("binding_id", String(ID)),
    Column("operation_id", String(64)),
    Column("summary", Text, nullable=False),
    # Facts of the event (never a secret): states, RPO seconds, RTO seconds, step names, ...
    Column("data", Text, nullable=False, default="{}"),
    Index("ux_dr_events_id", "id", unique=True),
    Index("ix_dr_events_instance", "instance_id", "seq"),
    Index("ix_dr_events_at", "at"),
)

# One row per instance with a rehearsal schedule (broker.rehearsals): when the next rehearsal is due, and the
# lease of the process that fires it, so that however many replicas run, one fires each due rehearsal once.
rehearsal_schedules = Table(
    "rehearsal_schedules",
    metadata,
    Column("instance_id", String(ID), primary_key=True),
    Column("schedule", String(128), nullable=False),  # a cron expression (croniter)
    Column("timezone", String(64), nullable=False, default="UTC"),
    Column("window_start", String(5)),  # HH:MM in timezone, or NULL: any time
    Column("window_minutes", Integer),
    Column("max_age_seconds", Float),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("next_due_at", Float, nullable=False),
    Column("lease_owner", String(128)),
    Column("lease_until", Float),
    Column("last_fired_at", Float),
    # started | skipped:<why> | passed | failed
    Column("last_outcome", String(128)),
    Column("last_operation_id", String(64)),
    Column("updated_at", Float, nullable=False),
    Index("ix_rehearsal_schedules_due", "enabled", "next_due_at"),
)

# Deliveries of DR events to their subscribers (broker.notifications): one row per event and destination,
# written by the dispatcher from the event log, claimed with a lease, retried with back-off until sent or dead.
outbox = Table(
    "outbox",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("event_seq", Integer, nullable=False),
    Column("instance_id", String(ID)),
    # webhook | email | event_notifications
    Column("channel", String(32), nullable=False),
    # the URL, the e-mail address, the Event Notifications destination
    Column("target", Text, nullable=False),
    # pending | sending | sent | dead
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", String(128)),
    Column("lease_until", Float),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("sent_at", Float),
    Index("ux_outbox_delivery", "event_seq", "channel", "target", unique=True),
    Index("ix_outbox_due", "state", "next_attempt_at"),
)

# Where each sequential export (COS: events, audit; the notification dispatcher) has got to. ``pending_*``
# names the batch being written before it is written, so that a run after a crash writes the same object
# with the same content, never a second object for the same records.
export_cursors = Table(
    "export_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("last_seq", Integer, nullable=False, default=0),
    Column("pending_start", Integer),
    Column("pending_end", Integer),
    Column("pending_key", Text),
    Column("lease_owner", String(128)),
    Column("lease_until", Float),
    Column("last_export_at", Float),
    Column("last_error", Text),
    Column("updated_at", Float, nullable=False),
)

# Instances whose DR configuration changed since their last snapshot in COS (broker.evidence.snapshots).
instance_snapshots = Table(
    "instance_snapshots",
    metadata,
    Column("instance_id", String(ID), primary_key=True),
    Column("changed_at", Float, nullable=False),
    Column("exported_at", Float),
    Column("exported_key", Text),
    # the changed_at its exported snapshot shows: due again while it is NULL or older than changed_at
    Column("exported_changed_at", Float),
    Column("lease_owner", String(128)),
    Column("lease_until", Float),
)
