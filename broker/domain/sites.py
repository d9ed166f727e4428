"""PowerVS sites: workspace CRNs and the Global Replication Service data-centre pairs.

GRS replicates only between fixed, bidirectional data-centre pairs (IBM Cloud docs, "Global Replication
Service"); both workspaces must be in the same account and differ. Sites in Chennai and Montreal reach
the DR orchestrator only through a proxy.

A workspace CRN's location field is its data centre (``dal10``), except in PowerVS's two oldest data
centres, whose workspaces carry their region's name: ``us-south`` is dal13 and ``us-east`` is wdc04
(``CRN_LOCATION_ZONE``). ``parse_workspace_crn`` maps those to the zone, so that ``us-south``/``us-east``
validate as the dal13/wdc04 GRS pair and reach the right PowerVS endpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GRS_PAIRS: frozenset[frozenset[str]] = frozenset(frozenset(p) for p in (
    ("dal10", "wdc07"),
    ("dal12", "wdc06"),
    ("dal14", "wdc06"),
    ("dal13", "wdc04"),
    ("mad02", "eu-de-1"),
    ("mad04", "eu-de-2"),
    ("lon04", "lon06"),
    ("osa21", "tok04"),
    ("syd04", "syd05"),
    ("sao01", "sao04"),
    ("mon01", "tor01"),
    ("che03", "in-mum-1"),
    ("che02", "in-mum-2"),
))

# Zone -> region of the PowerVS API endpoint serving it.
ZONE_REGION = {
    "dal10": "us-south", "dal12": "us-south", "dal13": "us-south", "dal14": "us-south",
    "wdc04": "us-east", "wdc06": "us-east", "wdc07": "us-east",
    "mad02": "mad", "mad04": "mad", "eu-de-1": "eu-de", "eu-de-2": "eu-de",
    "lon04": "lon", "lon06": "lon", "osa21": "osa", "tok04": "tok", "syd04": "syd", "syd05": "syd",
    "sao01": "sao", "sao04": "sao", "mon01": "mon", "tor01": "tor",
    "che02": "che", "che03": "che", "in-mum-1": "in-mum", "in-mum-2": "in-mum",
}

# CRN location -> zone, for the data centres whose workspace CRNs name their region instead.
CRN_LOCATION_ZONE = {"us-south": "dal13", "us-east": "wdc04"}
ZONE_CRN_LOCATION = {zone: location for location, zone in CRN_LOCATION_ZONE.items()}

PROXY_ZONE_PREFIXES = ("che", "mon")

_WORKSPACE_CRN = re.compile(  # the location group is named zone: see CRN_LOCATION_ZONE
    r"^crn:v1:(?P<cname>[a-z]+):(?P<ctype>public|private):power-iaas:(?P<zone>[a-z0-9-]+):"
    r"a/(?P<account>[0-9a-f]{32}):(?P<guid>[0-9a-f-]{36})::$"
)


@dataclass(frozen=True)
class WorkspaceRef:
    crn: str
    zone: str          # the data centre (``wdc04`` for a CRN located ``us-east``)
    account: str
    guid: str

    @property
    def location(self) -> str:
        """The CRN's location field (the zone, or the region for dal13 and wdc04)."""
        return crn_location(self.zone)

    @property
    def site(self) -> str:
        """The site as people name it: ``us-east (wdc04)`` where the CRN names the region, else the zone."""
        return self.zone if self.location == self.zone else f"{self.location} ({self.zone})"

    @property
    def region(self) -> str | None:
        return ZONE_REGION.get(self.zone)

    @property
    def needs_proxy(self) -> bool:
        return self.zone.startswith(PROXY_ZONE_PREFIXES)


def parse_workspace_crn(crn: str) -> WorkspaceRef | None:
    match = _WORKSPACE_CRN.match(crn)
    if match is None:
        return None
    zone = CRN_LOCATION_ZONE.get(match["zone"], match["zone"])
    return WorkspaceRef(crn=crn, zone=zone, account=match["account"], guid=match["guid"])


def crn_location(zone: str) -> str:
    """What a workspace CRN in ``zone`` carries in its location field."""
    return ZONE_CRN_LOCATION.get(zone, zone)


def is_grs_pair(zone_a: str, zone_b: str) -> bool:
    return frozenset((zone_a, zone_b)) in GRS_PAIRS


def partner_zones(zone: str) -> list[str]:
    return sorted(z for pair in GRS_PAIRS if zone in pair for z in pair if z != zone)
