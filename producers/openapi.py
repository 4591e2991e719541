"""The OpenAPI 3.1 document of the native route (``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

from producers.apis.native import MAX_ID_CHARS, MAX_NAME_CHARS, MAX_PROPERTIES

_STRING_MAP = {"type": "object", "additionalProperties": {}, "maxProperties": MAX_PROPERTIES}
_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
            "required": ["code", "message"],
        }
    },
}


def _event_schema() -> dict[str, Any]:
    text = {"type": "string", "maxLength": MAX_ID_CHARS}
    return {
        "type": "object",
        "description": "One event; field names are RawEvent's (schemas/avro/raw_event.avsc).",
        "properties": {
            "event_id": {
                "type": "string",
                "maxLength": 128,
                "description": "Stable id; a retry "
                "with the same id is counted once. Assigned when absent.",
            },
            "kind": {
                "type": "string",
                "enum": ["track", "identify", "update_user"],
                "default": "track",
            },
            "name": {
                "type": "string",
                "maxLength": MAX_NAME_CHARS,
                "description": "Required for kind=track.",
            },
            "user_id": text,
            "anonymous_id": text,
            "email": {"type": "string", "format": "email"},
            "display_name": text,
            "timestamp": {
                "oneOf": [
                    {"type": "string", "format": "date-time"},
                    {"type": "number", "description": "Unix s or ms"},
                ]
            },
            "url": {"type": "string"},
            "referrer": {"type": "string"},
            "domain": text,
            "properties": _STRING_MAP,
            "user_properties": _STRING_MAP,
            "user_properties_once": _STRING_MAP,
            "user_properties_unset": {"type": "array", "items": {"type": "string"}},
            "context_id": text,
            "order_id": text,
            "idempotency_key": text,
        },
    }


def _response(description: str, schema: dict[str, Any], retry: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if retry:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return response


def openapi_document(max_batch_events: int) -> dict[str, Any]:
    """The document, with the configured batch limit."""
    event = _event_schema()
    batch = {
        "type": "object",
        "required": ["events"],
        "properties": {
            "events": {"type": "array", "items": event, "minItems": 1, "maxItems": max_batch_events}
        },
    }
    accepted = {
        "type": "object",
        "properties": {
            "accepted": {"type": "integer"},
            "event_ids": {"type": "array", "items": {"type": "string"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "eventsieve ingestion API", "version": "1"},
        "components": {
            "securitySchemes": {
                "key": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A project's public ingest token or secret server key.",
                }
            }
        },
        "security": [{"key": []}],
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": "Publish one event or a batch to events.raw",
                    "description": "Answered after Kafka acknowledged every event (acks=all). "
                    "A batch is all or nothing. Idempotency-Key replays the first answer "
                    "(per process, 24 h).",
                    "parameters": [
                        {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"oneOf": [event, batch]}}},
                    },
                    "responses": {
                        "202": _response("Accepted and durable in Kafka", accepted),
                        "400": _response("Invalid body; error.field names the input", _ERROR),
                        "401": _response("Missing or unknown key", _ERROR),
                        "413": _response("Body over the size limit", _ERROR),
                        "422": _response("Idempotency-Key reused with another body", _ERROR),
                        "429": _response("Project over its rate limit", _ERROR, retry=True),
                        "503": _response("Kafka unavailable; nothing accepted", _ERROR, retry=True),
                    },
                }
            }
        },
    }
