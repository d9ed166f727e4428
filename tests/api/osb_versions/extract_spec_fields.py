"""Regenerate spec_fields.json: the response fields that each OSB version's spec.md defines, per object.

Run: python tests/api/osb_versions/extract_spec_fields.py <git dir of openservicebrokerapi/servicebroker>
It reads ``spec.md`` at the tags v2.12 .. v2.17 (``git show``) and keeps the first column of every field table
in the sections below, so tests/api/test_versions_spec.py can hold broker/api/versions.py to the spec text.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

TAGS = ["v2.12", "v2.13", "v2.14", "v2.15", "v2.16", "v2.17"]
# object kind -> (H2 section pattern or None for "anywhere", heading pattern); only response sections count.
SECTIONS = {
    "catalog": (r"^Catalog Management$", r"^Body"),
    "service": (None, r"^(Service Objects|Service Object|Service Offering Object)$"),
    "plan": (None, r"^(Plan Object|Service Plan Object)$"),
    "schemas": (None, r"^(Schema Object|Schemas Object)$"),
    "service_instance_schema": (None, r"^(Service Instances Object|Service Instance Schema Object)$"),
    "service_binding_schema": (None, r"^(Service Bindings Object|Service Binding Schema Object)$"),
    "input_parameters_schema": (None, r"^(Input Parameters Object|Input Parameters Schema Object)$"),
    "maintenance_info": (None, r"^Maintenance Info Object$"),
    "provision": (r"^Provisioning$", r"^Body$"),
    "update": (r"^Updating a Service Instance$", r"^Body$"),
    "deprovision": (r"^Deprovisioning$", r"^Body$"),
    "instance_metadata": (None, r"^Service Instance Metadata$"),
    "fetch_instance": (r"^Fetching a Service Instance$", r"^Body$"),
    "last_operation": (r"^Polling Last Operation( for Service Instances)?$", r"^Body$"),
    "binding_last_operation": (r"^Polling Last Operation for Service Bindings$", r"^Body$"),
    "bind": (r"^Binding$", r"^Body$"),
    "fetch_binding": (r"^Fetching a Service Binding$", r"^Body$"),
    "binding_metadata": (None, r"^Binding Metadata Object$"),
    "unbind": (r"^Unbinding$", r"^Body$"),
    "error": (r"^(Broker Errors|Service Broker Errors)$", r"^(Body|Broker Errors|Service Broker Errors)$"),
}
_LINK = re.compile(r"^\[([^\]]+)\]\([^)]*\)")


def fields_of(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    h2 = h3 = heading = ""
    for line in text.splitlines():
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            title = line.strip("# ").strip()
            if level == 2:
                h2, h3 = title, ""
            elif level == 3:
                h3 = title
            heading = title
            continue
        if not line.startswith("|") or re.match(r"^\|\s*-", line) or h3.startswith("Request"):
            continue
        first = _LINK.sub(r"\1", line.strip("|").split("|")[0].replace("\\", "").strip())
        m = re.match(r"^([a-z_]+)\*?$", first)
        if not m:
            continue
        for kind, (h2_pat, head_pat) in SECTIONS.items():
            if (h2_pat is None or re.search(h2_pat, h2)) and re.search(head_pat, heading):
                names = out.setdefault(kind, [])
                if m.group(1) not in names:
                    names.append(m.group(1))
    return out


def main(git_dir: str) -> None:
    result: dict[str, object] = {"source": "github.com/openservicebrokerapi/servicebroker spec.md", "versions": {}}
    for tag in TAGS:
        commit = subprocess.run(["git", "-C", git_dir, "rev-parse", f"{tag}^{{commit}}"], check=True,
                                capture_output=True, text=True).stdout.strip()
        text = subprocess.run(["git", "-C", git_dir, "show", f"{tag}:spec.md"], check=True,
                              capture_output=True, text=True).stdout
        result["versions"][tag] = {"commit": commit, "fields": fields_of(text)}  # type: ignore[index]
    target = Path(__file__).with_name("spec_fields.json")
    target.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
