"""DR evidence in Cloud Object Storage: the continuous export of the DR event log and the audit trail, the
audit chain's anchored head, and per-instance DR configuration snapshots (docs/evidence.md, "Cloud Object
Storage")."""
