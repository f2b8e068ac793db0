"""diagnosis.json's schema (diagnosis.schema.json beside this file) and a validator for it.

The validator covers the JSON Schema keywords the schema uses (type, const, required, properties,
patternProperties, additionalProperties, items, minItems, minimum, maximum, allOf, local $ref), so that
`rad convert` and the tests can check a diagnosis without another dependency.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from rad.errors import RadError

SCHEMA_PATH = Path(__file__).with_name("diagnosis.schema.json")
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


@cache
def diagnosis_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def schema_errors(instance, schema: dict | None = None, root: dict | None = None, where: str = "$") -> list[str]:
    """Every way `instance` breaks `schema` (default: the diagnosis schema), as 'path: problem' lines."""
    root = root or schema or diagnosis_schema()
    schema = root if schema is None else schema
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{key: value for key, value in schema.items() if key != "$ref"}}
    errors = []
    for sub in schema.get("allOf", []):
        errors += schema_errors(instance, sub, root, where)
    if "type" in schema and not any(is_type(instance, t) for t in _as_list(schema["type"])):
        return errors + [f"{where}: expected {schema['type']}, got {type(instance).__name__}"]
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{where}: expected {schema['const']!r}, got {instance!r}")
    if is_type(instance, "number"):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{where}: {instance} is below the minimum {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{where}: {instance} is above the maximum {schema['maximum']}")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(instance):
                errors += schema_errors(item, schema["items"], root, f"{where}[{i}]")
    if isinstance(instance, dict):
        errors += _object_errors(instance, schema, root, where)
    return errors


def _object_errors(instance: dict, schema: dict, root: dict, where: str) -> list[str]:
    errors = [f"{where}: missing '{key}'" for key in schema.get("required", []) if key not in instance]
    properties, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
    for key, value in instance.items():
        matched = [properties[key]] if key in properties else []
        matched += [sub for pattern, sub in patterns.items() if re.search(pattern, key)]
        extra = schema.get("additionalProperties", True)
        if not matched and extra is False:
            errors.append(f"{where}: unexpected '{key}'")
        elif not matched and isinstance(extra, dict):
            matched = [extra]
        for sub in matched:
            errors += schema_errors(value, sub, root, f"{where}.{key}")
    return errors


def is_type(value, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, TYPES[name])


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def check_diagnosis(data, where: str) -> dict:
    """`data` if it is a valid diagnosis, else a RadError naming `where` and the first field at fault."""
    errors = schema_errors(data)
    if errors:
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise RadError(f"{where} is not a valid diagnosis: {errors[0]}{more}")
    return data


def read_diagnosis(path: str | Path) -> dict:
    """A diagnosis.json, checked against the schema; a missing or malformed file is a one-line RadError."""
    path = Path(path)
    if not path.is_file():
        raise RadError(f"diagnosis file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RadError(f"{path} is not a JSON file ({err})") from None
    return check_diagnosis(data, str(path))
