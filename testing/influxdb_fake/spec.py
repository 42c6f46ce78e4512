"""InfluxData's OpenAPI description (`openapi.yaml`) and the checks the fake derives from it.

`validate` implements the OpenAPI 3.0 schema keywords this spec uses; `check_parameters` applies an
operation's query and content-header parameters to a request.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from email.message import Message
from pathlib import Path
from typing import Any

import yaml

from .flux import FluxError, parse_rfc3339
from .responses import HTTPError

SPEC_PATH = Path(__file__).with_name("openapi.yaml")


@functools.cache
def load_spec() -> dict[str, Any]:
    """The OpenAPI document, parsed once per process."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open("rb") as fh:
        return yaml.load(fh, Loader=loader)


def resolve(node: Any) -> Any:
    spec = load_spec()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"external $ref not supported: {ref}")
        target: Any = spec
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def operation(path: str, method: str) -> dict[str, Any]:
    return load_spec()["paths"][path][method.lower()]


def operation_parameters(path: str, method: str) -> list[dict[str, Any]]:
    return [resolve(p) for p in operation(path, method).get("parameters", [])]


def response_schema(path: str, method: str, status: int, media_type: str = "application/json") -> Any:
    responses = operation(path, method)["responses"]
    response = resolve(responses.get(str(status), responses.get("default")))
    if response is None:
        return None
    content = response.get("content", {}).get(media_type)
    return None if content is None else content.get("schema")


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def validate(instance: Any, schema: Any, path: str = "$") -> list[str]:
    """Validate against an OpenAPI 3.0 schema object.

    `oneOf` is checked as `anyOf`: the Flux AST schemas in this spec have no `required` keys or
    discriminators, so an AST node matches several alternatives at once.
    """
    schema = resolve(schema)
    if not isinstance(schema, dict):
        return []
    errors: list[str] = []
    for sub in schema.get("allOf", []):
        errors += validate(instance, sub, path)
    alternatives = schema.get("oneOf") or schema.get("anyOf")
    if alternatives and all(validate(instance, sub, path) for sub in alternatives):
        errors.append(f"{path}: does not match any allowed schema")
    expected = schema.get("type")
    if expected:
        types = _JSON_TYPES[expected]
        if not isinstance(instance, types) or (isinstance(instance, bool) and expected != "boolean"):
            if not (instance is None and schema.get("nullable")):
                return [*errors, f"{path}: expected {expected}, got {_json_type(instance)}"]
            return errors
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, str):
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
        if "minLength" in schema and len(instance) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if schema.get("format") == "date-time":
            try:
                parse_rfc3339(instance)
            except FluxError:
                errors.append(f"{path}: {instance!r} is not an RFC3339 date-time")
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{path}: missing required property {key!r}")
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if key in properties:
                errors += validate(value, properties[key], f"{path}.{key}")
            elif additional is False:
                errors.append(f"{path}: unexpected property {key!r}")
            elif isinstance(additional, dict):
                errors += validate(value, additional, f"{path}.{key}")
    if isinstance(instance, list):
        if "items" in schema:
            for i, item in enumerate(instance):
                errors += validate(item, schema["items"], f"{path}[{i}]")
        if schema.get("uniqueItems"):
            seen = [json.dumps(i, sort_keys=True) for i in instance]
            if len(set(seen)) != len(seen):
                errors.append(f"{path}: items are not unique")
    return errors


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for name, types in _JSON_TYPES.items():
        if isinstance(value, types) and not (isinstance(value, bool) and name != "boolean"):
            return name
    return type(value).__name__


def media_type(value: str) -> str:
    """A Content-Type value lower-cased, without blanks around its parameters."""
    return ";".join(part.strip().lower() for part in value.split(";") if part.strip())


def _media_type_allowed(value: str, allowed: Iterable[str]) -> bool:
    """Exact enum match, or an enum's bare media type plus a UTF-8 charset (the documented default)."""
    normalized = media_type(value)
    enum = {media_type(v) for v in allowed}
    bare, _, parameters = normalized.partition(";")
    return normalized in enum or (bare in enum and parameters in {"", "charset=utf-8"})


def check_parameters(spec_path: str, query: Mapping[str, str], headers: Message) -> None:
    """Query parameters and content headers, checked against the POST operation's `parameters`."""
    for param in operation_parameters(spec_path, "post"):
        name, location = param["name"], param["in"]
        schema = resolve(param.get("schema", {}))
        if location == "query":
            if name not in query:
                if param.get("required") and not (name == "org" and "orgID" in query):
                    if name == "org":
                        raise HTTPError(400, "Please provide either orgID or org")
                    raise HTTPError(400, f'missing required query parameter "{name}"')
                continue
            problems = validate(query[name], schema, name)
            if problems:
                raise HTTPError(400, f"invalid query parameter {name}: {'; '.join(problems)}")
        elif location == "header" and name in {"Content-Type", "Content-Encoding"} and "enum" in schema:
            value = headers.get(name)
            if value is None:
                if "default" in schema:
                    continue
                raise HTTPError(415, f"missing {name} header; expected one of {schema['enum']}")
            if not _media_type_allowed(value, schema["enum"]):
                raise HTTPError(415, f"unsupported {name} {value!r}; expected one of {schema['enum']}")


def query_body_problems(request: Any) -> list[str]:
    """What is wrong with a JSON /api/v2/query body, per `components.schemas.Query`; `params` must be an object."""
    problems = validate(request, {"$ref": "#/components/schemas/Query"}, "body")
    if isinstance(request, dict) and "params" in request and not isinstance(request["params"], dict):
        problems.append("body.params: expected object")
    return problems
