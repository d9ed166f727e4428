"""The demo account the simulated cloud starts with, so that the catalog examples provision out of the box.

One account with a workspace in each data centre of several GRS pairs; each workspace has a
replication-capable pool and a plain one; the primary workspaces hold a few volumes and VMs.
Seeded resources belong to the customer (no broker instance owns them) and are never deleted by the broker.
"""

from __future__ import annotations

import uuid

from broker.domain.sites import crn_location
from broker.orchestrators.simulated.cloud import SimulatedCloud

DEMO_ACCOUNT = "0123456789abcdef0123456789abcdef"
OTHER_ACCOUNT = "fedcba9876543210fedcba9876543210"


def _guid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"drbroker-sim:{name}"))


# (zone, workspace guid); the first pair's guids are the ones the catalog examples use.
DEMO_WORKSPACES: dict[str, str] = {
    "dal10": "7f3c9a7e-0b4e-4c8e-9d1a-3e5f6a7b8c9d",
    "wdc07": "2b8d4e6f-1a3c-4d5e-8f90-a1b2c3d4e5f6",
    **{zone: _guid(zone) for zone in ("dal12", "wdc06", "dal14", "mad02", "eu-de-1", "lon04", "lon06",
                                      "che03", "in-mum-1", "mon01", "tor01", "syd04", "syd05", "dal13", "wdc04")},
}

REPLICATION_POOL = "Tier1-Flash-1"
PLAIN_POOL = "Tier3-Flash-2"

# Volumes of every demo workspace: (volume id, pool). The examples protect vol-app-data-1 and vol-app-log-1.
_VOLUMES = [
    ("vol-app-data-1", REPLICATION_POOL), ("vol-app-log-1", REPLICATION_POOL), ("vol-db-1", REPLICATION_POOL),
    ("vol-db-2", REPLICATION_POOL), ("vol-archive-1", PLAIN_POOL),
]
# dal10 also holds many more: enough to exceed a replication group's 30-volume limit, and for many
# instances at once (a volume belongs to at most one replication group).
BULK_VOLUMES = [f"vol-bulk-{i:03d}" for i in range(1, 201)]
_BULK = [(v, REPLICATION_POOL) for v in BULK_VOLUMES]
_VMS = ["vm-app-1", "vm-db-1"]
# The second account only needs one GRS pair (to show that both sites must be in one account).
_OTHER_ACCOUNT_ZONES = ("dal10", "wdc07")


def workspace_crn(zone: str, account: str = DEMO_ACCOUNT) -> str:
    """The CRN of the demo workspace in ``zone``: dal13's and wdc04's carry ``us-south`` and ``us-east``."""
    guid = DEMO_WORKSPACES[zone] if account == DEMO_ACCOUNT else _guid(f"{account}:{zone}")
    return f"crn:v1:bluemix:public:power-iaas:{crn_location(zone)}:a/{account}:{guid}::"


def _rows() -> list[tuple[str, str, str, dict]]:
    rows: list[tuple[str, str, str, dict]] = []
    for account, zones in ((DEMO_ACCOUNT, tuple(DEMO_WORKSPACES)), (OTHER_ACCOUNT, _OTHER_ACCOUNT_ZONES)):
        for zone in zones:
            crn = workspace_crn(zone, account)
            rows.append(("workspace", crn, "active",
                         {"crn": crn, "zone": zone, "account": account, "name": f"demo-{zone}"}))
            for pool, replication in ((REPLICATION_POOL, True), (PLAIN_POOL, False)):
                rows.append(("storage_pool", f"{crn}/{pool}", "available",
                             {"workspace_crn": crn, "pool": pool, "replication_enabled": replication}))
            volumes = _VOLUMES + (_BULK if zone == "dal10" and account == DEMO_ACCOUNT else [])
            for vol_id, pool in volumes:
                rows.append(("volume", f"{crn}/{vol_id}", "available",
                             {"workspace_crn": crn, "volume_id": vol_id, "pool": pool, "size_gb": 100,
                              "replication_enabled": False, "group": None}))
            for vm in _VMS:
                rows.append(("pvm_instance", f"{crn}/{vm}", "ACTIVE", {"workspace_crn": crn, "vm_id": vm}))
    return rows


def seed_demo_account(cloud: SimulatedCloud) -> None:
    """Create the demo account's resources unless they exist (one transaction; safe from several processes)."""
    cloud.seed(_rows())


def demo_rows() -> list[tuple[str, str, str, dict]]:
    """The demo account as rows (kind, natural id, state, data): the fake IBM Cloud seeds the same account."""
    return _rows()
