"""OpenAPI for the hand-read request bodies (:mod:`service.request_input`): each route documents
its JSON model and, where it takes one, the multipart form, built from the pydantic models that
validate them. The API-key requirement is documented only when keys are configured."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel


def multipart_schema(fields_model: type[BaseModel], as_text: Sequence[str]) -> dict[str, Any]:
    """The multipart form of ``fields_model`` plus the frames; ``as_text`` fields are sent as
    one string (a JSON object, a comma-separated list)."""
    schema = fields_model.model_json_schema()
    properties: dict[str, Any] = dict(schema["properties"])
    for name in as_text:
        description = properties[name].get("description", "")
        properties[name] = {"type": "string", "description": description}
    properties["frames"] = {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "description": "JPEG or PNG files in tracklet order (repeat the field).",
    }
    properties["archive"] = {
        "type": "string",
        "format": "binary",
        "description": "Instead of 'frames': one zip of frames, ordered by name (numerically).",
    }
    return {"type": "object", "properties": properties, "required": schema.get("required", [])}


def body_doc(json_model: type[BaseModel], multipart: dict[str, Any] | None) -> dict[str, Any]:
    """A route's ``openapi_extra``: its request body in JSON and, maybe, multipart."""
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{json_model.__name__}"}}
    }
    if multipart is not None:
        content["multipart/form-data"] = {"schema": multipart}
    return {"requestBody": {"required": True, "content": content}}


def _without_security(schema: dict[str, Any]) -> None:
    """No key is asked for when none is configured: say so, so clients send none."""
    schema.get("components", {}).pop("securitySchemes", None)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.pop("security", None)


def install_openapi(app: FastAPI, models: Sequence[type[BaseModel]], auth_enabled: bool) -> None:
    """Add the hand-read request models to the OpenAPI components; drop the API-key
    requirement when authentication is off."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in model_schema.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components[model.__name__] = model_schema
        if not auth_enabled:
            _without_security(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
