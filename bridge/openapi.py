"""The OpenAPI 3.1 document of the daemon's inbound endpoints, served at ``/openapi.json``.

Built from :attr:`bridge.app.Runtime.routes`: every route an adapter registers carries the
pydantic models its handler validates with (``body``, ``query``, ``headers``, ``path``), so the
schemas in the document *are* the validation (``model_json_schema`` in validation mode), never a
second description that can drift. Security schemes say how each route authenticates (HTTP
Basic, an API-key header, a key in the query string) by scheme and header *name* only: no
credential value ever appears in the document. Routes without models are still listed (with
their path parameters as strings), so the document names every endpoint the daemon serves.

The document is served without authentication: it holds the retailer ids in the paths and the
names of the headers a partner sends, nothing secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from bridge.configbase import (
    InboundBasicAuth,
    InboundBearerAuth,
    InboundCredentials,
    InboundUnsupportedAuth,
)

if TYPE_CHECKING:
    from bridge.app import Route

OPENAPI_VERSION = "3.1.0"
SCHEMA_REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"\{([^}/:]+)(?::[^}]*)?\}")


@dataclass(frozen=True)
class HttpBasic:
    """The route wants HTTP Basic credentials."""

    @property
    def scheme_name(self) -> str:
        return "basic"

    def scheme(self) -> dict[str, Any]:
        return {"type": "http", "scheme": "basic"}


@dataclass(frozen=True)
class ApiKey:
    """The route wants a shared secret in header (or query parameter) ``name``."""

    name: str
    location: Literal["header", "query"] = "header"

    @property
    def scheme_name(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", self.name)
        return f"apiKey.{self.location}.{safe}"

    def scheme(self) -> dict[str, Any]:
        return {"type": "apiKey", "in": self.location, "name": self.name}


@dataclass(frozen=True)
class HttpBearer:
    """The route wants ``Authorization: Bearer <token>``."""

    @property
    def scheme_name(self) -> str:
        return "bearer"

    def scheme(self) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer"}


Security = HttpBasic | ApiKey | HttpBearer
"""How one inbound route authenticates its caller (names only, never values)."""


def security_of(
    auth: InboundCredentials | InboundUnsupportedAuth | None,
) -> tuple[Security, ...]:
    """The security requirement of a route guarded by ``auth`` (``()``: none configured)."""
    if auth is None or isinstance(auth, InboundUnsupportedAuth):
        return ()
    if isinstance(auth, InboundBasicAuth):
        return (HttpBasic(),)
    if isinstance(auth, InboundBearerAuth):
        return (HttpBearer(),)
    return (ApiKey(auth.header, "header"),)


class ErrorDetail(BaseModel):
    """What went wrong: ``field`` names the offending body path, header or parameter."""

    model_config = ConfigDict(extra="allow")

    message: str
    field: str | None = None
    inbox_id: int | None = Field(default=None, description="where the payload was quarantined")
    quarantined: bool | None = None


class ErrorBody(BaseModel):
    """Every error answer of the daemon: ``{"error": {"message": ..., "field": ...}}``."""

    error: ErrorDetail


@dataclass(frozen=True)
class Operation:
    """What the document says about one route beyond its method and path."""

    summary: str = ""
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    headers: type[BaseModel] | None = None
    path: type[BaseModel] | None = None
    security: tuple[Security, ...] = ()
    responses: Mapping[int, str] = field(default_factory=dict)
    """Status -> description of the answers beyond the defaults (200, 401, 4xx, 503)."""
    tags: tuple[str, ...] = ()


def build_document(
    routes: Sequence[Route],
    *,
    title: str = "returns-bridge inbound API",
    version: str = "1",
    extra: Iterable[tuple[str, str, str]] = (),
) -> dict[str, Any]:
    """The OpenAPI document of ``routes`` plus ``extra`` ``(method, path, summary)`` entries
    (the daemon's own /healthz, /readyz, /openapi.json)."""
    models = _models(routes)
    schema_of, defs = _schemas(models)
    paths: dict[str, dict[str, Any]] = {}
    schemes: dict[str, Any] = {}
    for route in routes:
        op = route.operation
        for security in op.security:
            schemes[security.scheme_name] = security.scheme()
        paths.setdefault(_openapi_path(route.path), {})[route.method.lower()] = _operation(
            route, schema_of
        )
    for method, path, summary in extra:
        paths.setdefault(path, {})[method.lower()] = {
            "operationId": _operation_id(method, path),
            "summary": summary,
            "responses": {"200": {"description": "OK", "content": {"application/json": {}}}},
        }
    components: dict[str, Any] = {"schemas": defs}
    if schemes:
        components["securitySchemes"] = dict(sorted(schemes.items()))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": components,
    }


def _models(routes: Sequence[Route]) -> list[type[BaseModel]]:
    seen: dict[type[BaseModel], None] = {ErrorBody: None}
    for route in routes:
        op = route.operation
        for model in (op.body, op.query, op.headers, op.path):
            if model is not None:
                seen[model] = None
    return list(seen)


def _schemas(
    models: list[type[BaseModel]],
) -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, Any]]:
    mode: JsonSchemaMode = "validation"
    keyed, top = models_json_schema([(m, mode) for m in models], ref_template=SCHEMA_REF)
    schema_of = {model: keyed[(model, mode)] for model in models}
    return schema_of, dict(top.get("$defs", {}))


def _parameters(model: type[BaseModel] | None, location: str) -> list[dict[str, Any]]:
    if model is None:
        return []
    parameters = []
    schema = model.model_json_schema(ref_template=SCHEMA_REF, mode="validation")
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    for name, prop in properties.items():
        info = model.model_fields.get(name)
        description = prop.pop("description", None) or (info.description if info else None)
        entry: dict[str, Any] = {
            "name": name,
            "in": location,
            "required": location == "path" or name in required,
            "schema": prop,
        }
        if description:
            entry["description"] = description
        parameters.append(entry)
    return parameters


def _operation(route: Route, schema_of: Mapping[type[BaseModel], Any]) -> dict[str, Any]:
    op = route.operation
    parameters = [
        *_parameters(op.path, "path"),
        *_parameters(op.query, "query"),
        *_parameters(op.headers, "header"),
    ]
    named = {p["name"] for p in parameters if p["in"] == "path"}
    for name in _PATH_PARAM.findall(route.path):
        if name not in named:
            parameters.append(
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            )
    error = {"application/json": {"schema": {"$ref": SCHEMA_REF.format(model="ErrorBody")}}}
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {}}},
        "4XX": {"description": "refused; the error names the field", "content": error},
        "503": {"description": "not handled now; retry after Retry-After", "content": error},
    }
    if op.security:
        responses["401"] = {"description": "missing or wrong credentials", "content": error}
    for status, description in op.responses.items():
        responses[str(status)] = {"description": description, "content": error}
    operation: dict[str, Any] = {
        "operationId": route.name or _operation_id(route.method, route.path),
        "summary": op.summary,
        "responses": responses,
    }
    if op.tags:
        operation["tags"] = list(op.tags)
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema_of[op.body]}},
        }
    operation["security"] = [{s.scheme_name: []} for s in op.security] if op.security else []
    return operation


def _openapi_path(path: str) -> str:
    """aiohttp's ``{name:regex}`` placeholders as OpenAPI's ``{name}``."""
    return _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", _openapi_path(path)).strip("_")
    return f"{method.lower()}_{words}"
