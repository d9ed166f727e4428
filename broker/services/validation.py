"""Parameter validation against a plan's JSON schemas, with schema defaults applied.

Error descriptions name the field (``parameters.rpo_target_minutes: 0 is less than the minimum of 1``)
and never repeat a value the schema marks ``writeOnly`` (a secret).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft7Validator, validators
from jsonschema.exceptions import ValidationError

from broker.domain.errors import InvalidParameters


def _with_defaults(cls: Any) -> Any:
    base = cls.VALIDATORS["properties"]

    def properties(validator: Any, props: Mapping[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
        if isinstance(instance, dict):
            for name, sub in props.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from base(validator, props, instance, schema)

    return validators.extend(cls, {"properties": properties})


_CACHE: dict[int, tuple[Any, Any]] = {}


def _validators(schema: Mapping[str, Any]) -> tuple[Any, Any]:
    key = id(schema)
    if key not in _CACHE:
        cls = validators.validator_for(schema, default=Draft7Validator)
        _CACHE[key] = (cls(schema), _with_defaults(cls)(schema))
    return _CACHE[key]


def _path(err: ValidationError, root: str) -> str:
    out = root
    for part in err.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _is_sensitive(err: ValidationError) -> bool:
    return isinstance(err.schema, dict) and bool(err.schema.get("writeOnly"))


# Validators whose message names properties or counts, never values.
_SAFE_FOR_CONTAINERS = {"required", "additionalProperties", "minProperties", "maxProperties", "minItems",
                        "maxItems", "dependencies", "dependentRequired", "propertyNames"}


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" + ("" if n == 1 else "s")


def _limit_message(err: ValidationError) -> str | None:
    """The rule and its limit in words (jsonschema repeats the value and leaves the limit out)."""
    limit, value = err.validator_value, err.instance
    if err.validator in ("maxItems", "minItems") and isinstance(value, list):
        bound = "at most" if err.validator == "maxItems" else "at least"
        return f"has {_count(len(value), 'item')}; {bound} {limit} allowed"
    if err.validator in ("maxProperties", "minProperties") and isinstance(value, dict):
        bound = "at most" if err.validator == "maxProperties" else "at least"
        return f"has {_count(len(value), 'property')}; {bound} {limit} allowed".replace("propertys", "properties")
    if err.validator in ("maxLength", "minLength") and isinstance(value, str):
        bound = "at most" if err.validator == "maxLength" else "at least"
        return f"is {_count(len(value), 'character')} long; {bound} {limit} allowed"
    if err.validator == "uniqueItems" and isinstance(value, list):
        return "lists an item more than once; each may appear only once"
    if err.validator == "pattern" and isinstance(value, str):
        shown = value if len(value) <= 80 else value[:77] + "..."
        form = err.schema.get("description") if isinstance(err.schema, dict) else None
        # The field's description says what the pattern means; without one, the pattern is all there is.
        return f"{shown!r} is not of the expected form ({form.rstrip('.')})" if form else \
            f"{shown!r} is not of the expected form (pattern {limit})"
    return None


def _message(err: ValidationError) -> str:
    limited = _limit_message(err)
    if limited:
        return limited
    # Messages of oneOf/anyOf/type/enum on an object repeat the whole object, secrets included.
    if isinstance(err.instance, dict | list) and err.validator not in _SAFE_FOR_CONTAINERS:
        if err.validator in ("oneOf", "anyOf"):
            forms = err.validator_value if isinstance(err.validator_value, list) else []
            if forms and all(isinstance(f, dict) and set(f) == {"required"} for f in forms):
                # alternatives of required fields: name them ("needs ssh_key_name, or secret and secret_group")
                return "needs " + ", or ".join(" and ".join(f["required"]) for f in forms)
            return "must match exactly one of the allowed forms" if err.validator == "oneOf" \
                else "must match at least one of the allowed forms"
        if err.validator == "type":
            return f"must be of type {err.validator_value!r}"
        return f"does not satisfy {err.validator!r}"
    return err.message


def sensitive_paths(schema: Mapping[str, Any] | None) -> set[tuple[str, ...]]:
    """Property paths the schema marks writeOnly (secrets)."""
    found: set[tuple[str, ...]] = set()

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if not isinstance(node, dict):
            return
        if node.get("writeOnly"):
            found.add(path)
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, (*path, name))
        walk(node.get("items"), (*path, "[]"))  # "[]": every item of an array (webhooks[].secret)

    walk(schema or {}, ())
    return found


def _drop(node: Any, path: tuple[str, ...]) -> None:
    if not path:
        return
    if path[0] == "[]":
        for item in node if isinstance(node, list) else ():
            _drop(item, path[1:])
    elif isinstance(node, dict):
        if len(path) == 1:
            node.pop(path[0], None)
        else:
            _drop(node.get(path[0]), path[1:])


def redact(parameters: Mapping[str, Any], schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``parameters`` without the values the schema marks writeOnly."""
    out = copy.deepcopy(dict(parameters))
    for path in sensitive_paths(schema):
        _drop(out, path)
    return out


def validate_parameters(parameters: Mapping[str, Any], schema: Mapping[str, Any] | None,
                        *, apply_defaults: bool = True) -> dict[str, Any]:
    """Validate and return a copy with defaults filled in; raise InvalidParameters naming each field."""
    data = copy.deepcopy(dict(parameters))
    if not schema:
        return data
    plain, defaulting = _validators(schema)
    errors = sorted(plain.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        parts = []
        for err in errors[:5]:
            where = _path(err, "parameters")
            if _is_sensitive(err):
                # the rule the value breaks, in the schema's words, never the value
                rule = err.schema.get("description") if err.validator == "pattern" else None
                parts.append(f"{where}: invalid value (not shown: the field is sensitive)"
                             + (f"; must be {rule[0].lower()}{rule[1:]}" if rule else ""))
            else:
                parts.append(f"{where}: {_message(err)}")
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise InvalidParameters("; ".join(parts) + more)
    if apply_defaults:
        for _ in defaulting.iter_errors(data):
            pass
    return data
