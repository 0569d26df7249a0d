"""The OpenAPI document of an app some of whose endpoints are plain ASGI.

FastAPI documents the routes it runs. An endpoint that is a plain Starlette ``Route``
(``POST /v1/verify``) is described by a FastAPI route that is handed to the document
only: it never enters the router, so nothing can ever route a request to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute


def document_also(app: FastAPI, described: Sequence[APIRoute]) -> None:
    """Make ``app.openapi()`` describe ``described`` beside the app's own routes."""

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = get_openapi(
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
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
