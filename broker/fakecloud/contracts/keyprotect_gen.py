"""Key Protect request bodies from IBM/keyprotect-go-client (used by ``generate.py``).

IBM's Python SDK for Key Protect (``keyprotect``, installed) models the answers, and ``sdk.py`` reads them
from it, but takes every request body as opaque bytes. The Go client builds the same requests from typed
structs, so their ``json`` tags name the fields a body may carry. Which struct each operation sends is
read from the Go client at the pinned commit (the function named below wraps the request it makes):

- ``createKeyResource`` posts ``Keys`` (``metadata`` + ``resources: [Key]``), to ``keys`` and to
  ``keys_with_policy_overrides``;
- ``doKeysAction`` posts ``KeysActionRequest`` to ``keys/{id}/actions/{action}`` (wrap, unwrap, rotate,
  setKeyForDeletion, unsetKeyForDeletion, ...);
- ``setPolicy`` / ``SetPolicy`` put ``Policies`` (``metadata`` + ``resources: [Policy]``) to
  ``keys/{id}/policies``.

Only field names are kept; the Go structs mark nothing required (the SDK's answer models do).
"""

from __future__ import annotations

import re
from typing import Any

from broker.fakecloud.contracts.generate import GitTree, parse_go_structs, reachable, struct_schemas

KP_REPO = "IBM/keyprotect-go-client"
KP_COMMIT = "f377f015bacce7a21cb2b75e4a949aa025c54aba"

# SDK operation id -> (Go function that sends it, Go struct of its body)
REQUESTS = {
    "create_key": ("createKeyResource", "Keys"),
    "create_key_with_policies_overrides": ("createKeyResource", "Keys"),
    "wrap_key": ("doKeysAction", "KeysActionRequest"),
    "unwrap_key": ("doKeysAction", "KeysActionRequest"),
    "rewrap_key": ("doKeysAction", "KeysActionRequest"),
    "rotate_key": ("doKeysAction", "KeysActionRequest"),
    "set_key_for_deletion": ("doKeysAction", "KeysActionRequest"),
    "unset_key_for_deletion": ("doKeysAction", "KeysActionRequest"),
    "put_policy": ("setPolicy", "Policies"),
}
FILES = ("keys.go", "key_rings.go", "policy.go")


def keyprotect(tree: GitTree) -> dict[str, Any]:
    structs: dict[str, dict[str, Any]] = {}
    sources = {f: tree.read(f) for f in FILES}
    for text in sources.values():
        structs.update(parse_go_structs(text))
    everything = "\n".join(sources.values())
    for op, (fn, struct) in REQUESTS.items():
        # Hold the table to the source: the function exists and sends a value of that struct.
        body = re.search(r"func \(c \*Client\) " + fn + r"\(.*?\n}\n", everything, re.S)
        if body is None or struct not in structs:
            raise SystemExit(f"keyprotect-go-client@{tree.commit[:12]}: {fn} or {struct} not found (for {op})")
    defs = struct_schemas(structs, prefix="go.")
    for schema in defs.values():  # the Go client's omitempty says how it sends, not what the API answers
        for prop in (schema.get("properties") or {}).values():
            prop.pop("x-omitempty", None)
    return {"service": "kms", "source": {"repo": KP_REPO, "commit": tree.commit, "paths": list(FILES)},
            "operations": [{"id": op, "body": f"go.{struct}"} for op, (_fn, struct) in REQUESTS.items()],
            "$defs": reachable(defs, {f"go.{s}" for _f, s in REQUESTS.values()})}
