"""The OpenAPI document of an app some of whose endpoints are plain ASGI.

FastAPI documents the routes it runs. An endpoint that is a plain Starlette ``Route``
(``POST /v1/verify``) is described by a FastAPI route that is handed to the document
only: it never enters the router, so nothing can ever route a request to it.

FastAPI's document is then made to say what the server does (``contract``):

- no 422 ``HTTPValidationError``: quotad answers a failed validation 400 with ``Error``;
- every operation may answer 400 (its ``api-version``, a body that is not JSON), an
  authenticated one 429 (a client past its failure budget), one with a body 413;
- ``api-version`` (SPEC 5.3) is an optional header of every operation, ``v1`` its one value;
- a query or header parameter is never ``null`` (an absent one is left out);
- a map whose keys have a pattern says so with ``propertyNames`` (FastAPI's
  ``patternProperties`` alone lets any other key through);
- ``links`` from what a POST creates to the operations on it (for clients and for
  stateful fuzzing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from quotad.http.ids import API_VERSIONS, LATEST_VERSION

ERROR = {
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
REFUSALS = {"400": "Bad Request", "413": "Payload Too Large", "429": "Too Many Requests"}

API_VERSION_PARAMETER = {
    "name": "api-version",
    "in": "header",
    "required": False,
    "description": f"The API's major version (default: the latest, {LATEST_VERSION}); "
    "every answer echoes the one it was served with",
    "schema": {"type": "string", "enum": list(API_VERSIONS)},
}

# (method, path of the creating POST) -> links of its 201: name -> (method, path, parameters)
LINKS: dict[tuple[str, str], dict[str, tuple[str, str, dict[str, str]]]] = {
    ("post", "/admin/v1/accounts"): {
        "GetAccount": (
            "get",
            "/admin/v1/accounts/{account_id}",
            {"account_id": "$response.body#/id"},
        ),
        "UpdateAccount": (
            "patch",
            "/admin/v1/accounts/{account_id}",
            {"account_id": "$response.body#/id"},
        ),
        "DeleteAccount": (
            "delete",
            "/admin/v1/accounts/{account_id}",
            {"account_id": "$response.body#/id"},
        ),
        "CreateKey": (
            "post",
            "/admin/v1/accounts/{account_id}/keys",
            {"account_id": "$response.body#/id"},
        ),
        "ListKeys": (
            "get",
            "/admin/v1/accounts/{account_id}/keys",
            {"account_id": "$response.body#/id"},
        ),
    },
    ("post", "/admin/v1/plans"): {
        "GetPlan": ("get", "/admin/v1/plans/{plan_id}", {"plan_id": "$response.body#/id"}),
        "ReplacePlan": ("put", "/admin/v1/plans/{plan_id}", {"plan_id": "$response.body#/id"}),
        "DeletePlan": ("delete", "/admin/v1/plans/{plan_id}", {"plan_id": "$response.body#/id"}),
    },
    ("post", "/admin/v1/accounts/{account_id}/keys"): {
        "RevokeKey": ("delete", "/admin/v1/keys/{key_id}", {"key_id": "$response.body#/id"}),
        "RotateKey": ("post", "/admin/v1/keys/{key_id}/rotate", {"key_id": "$response.body#/id"}),
    },
    ("post", "/admin/v1/keys/{key_id}/rotate"): {
        "RevokeKey": ("delete", "/admin/v1/keys/{key_id}", {"key_id": "$response.body#/id"}),
        "RotateKey": ("post", "/admin/v1/keys/{key_id}/rotate", {"key_id": "$response.body#/id"}),
    },
}


def document_also(app: FastAPI, described: Sequence[APIRoute]) -> None:
    """Make ``app.openapi()`` describe ``described`` beside the app's own routes."""

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = contract(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    openapi_version=app.openapi_version,
                    summary=app.summary,
                    description=app.description,
                    terms_of_service=app.terms_of_service,
                    contact=app.contact,
                    license_info=app.license_info,
                    routes=[*app.routes, *described],
                    webhooks=app.webhooks.routes,
                    tags=app.openapi_tags,
                    servers=app.servers,
                    separate_input_output_schemas=app.separate_input_output_schemas,
                    external_docs=app.openapi_external_docs,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def contract(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's ``document`` made to say what quotad's server does (see the module)."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for methods in document["paths"].values():
        for operation in methods.values():
            responses = operation["responses"]
            responses.pop("422", None)
            for status in _refusals(operation):
                responses.setdefault(status, {"description": REFUSALS[status], **ERROR})
            parameters = [
                p for p in operation.get("parameters", ()) if p["name"].lower() != "api-version"
            ]
            for parameter in parameters:
                if parameter["in"] in ("query", "header"):
                    parameter["schema"] = _not_null(parameter["schema"])
            operation["parameters"] = [*parameters, dict(API_VERSION_PARAMETER)]
    for schema in schemas.values():
        _key_patterns(schema)
    _links(document)
    return document


def _refusals(operation: dict[str, Any]) -> list[str]:
    """The refusals the app's middleware and authentication can answer ``operation`` with."""
    found = ["400"]
    if "requestBody" in operation:
        found.append("413")
    if operation.get("security"):
        found.append("429")
    return found


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without its ``null`` alternative (a parameter is absent, never null)."""
    options = schema.get("anyOf")
    if options is None:
        return schema
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**kept[0], **rest}


def _key_patterns(schema: Any) -> None:
    """``patternProperties: {P: S}`` as ``propertyNames: {pattern: P}`` and
    ``additionalProperties: S``, everywhere in ``schema``: other keys are refused."""
    if isinstance(schema, list):
        for item in schema:
            _key_patterns(item)
        return
    if not isinstance(schema, dict):
        return
    patterns = schema.get("patternProperties")
    if isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in schema:
        ((pattern, value),) = patterns.items()
        del schema["patternProperties"]
        schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
        schema["additionalProperties"] = value
    for value in schema.values():
        _key_patterns(value)


def _links(document: dict[str, Any]) -> None:
    paths = document["paths"]
    for (method, path), links in LINKS.items():
        operation = paths.get(path, {}).get(method)
        if operation is None:
            continue
        created = operation["responses"].get("201")
        if created is None:
            continue
        found = {}
        for name, (target_method, target_path, parameters) in links.items():
            target = paths.get(target_path, {}).get(target_method)
            if target is not None:
                found[name] = {"operationId": target["operationId"], "parameters": parameters}
        if found:
            created["links"] = found
