"""The API's OpenAPI 3.0 description, served at GET /openapi.json.

Written by hand because the routes validate raw JSON themselves (to answer in OpenAI's error
shape): the document states the same fields and ranges as `protocol.parse_chat_request`, with
this server's limits filled in, so clients and API fuzzers see what the server really accepts.
"""

from __future__ import annotations

from vinstruct.serve.protocol import Limits

JSON = "application/json"
# One server-sent event: `data` holds a chat.completion.chunk as JSON, an error object, or "[DONE]".
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def _content(*parts: str) -> dict:
    """A message's content: a string, or a list of the named part types."""
    return {"oneOf": [{"type": "string"}, {"type": "array", "items": {"oneOf": [_ref(p) for p in parts]}}]}


def _message(roles: list[str], *parts: str) -> dict:
    return {"type": "object", "required": ["role", "content"],
            "properties": {"role": {"type": "string", "enum": roles}, "content": _content(*parts),
                           "name": {"type": "string"}}}


def _schemas(model: str, limits: Limits) -> dict:
    max_tokens = _nullable({"type": "integer", "minimum": 1, "maximum": limits.max_tokens})
    stop = {"type": "string", "minLength": 1}
    return {
        "TextPart": {"type": "object", "required": ["type", "text"],
                     "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}},
        "ImagePart": {"type": "object", "required": ["type", "image_url"], "properties": {
            "type": {"type": "string", "enum": ["image_url"]},
            "image_url": {"type": "object", "required": ["url"], "properties": {
                "url": {"type": "string", "description": "data:image/png|jpeg|webp;base64,..., a path under "
                                                         "--allow-dir, or http(s) with --allow-remote-images"},
                "detail": {"type": "string", "enum": ["auto", "low", "high"]}}}}},
        "SystemMessage": _message(["system", "developer"], "TextPart"),
        "UserMessage": _message(["user"], "TextPart", "ImagePart"),
        "AssistantMessage": _message(["assistant"], "TextPart"),
        "ChatCompletionRequest": {
            "type": "object",
            "required": ["model", "messages"],
            "description": f"At most {limits.max_images} images per request; the conversation starts and ends "
                           "with a user message (after any system messages).",
            "properties": {
                "model": {"type": "string", "enum": [model]},
                "messages": {"type": "array", "minItems": 1, "items": {
                    "oneOf": [_ref("SystemMessage"), _ref("UserMessage"), _ref("AssistantMessage")]}},
                "temperature": _nullable({"type": "number", "minimum": 0, "maximum": 2}),
                "top_p": _nullable({"type": "number", "minimum": 0, "maximum": 1}),
                "max_tokens": max_tokens,
                "max_completion_tokens": max_tokens,
                "n": _nullable({"type": "integer", "minimum": 1, "maximum": limits.max_n}),
                "stop": _nullable({"oneOf": [stop, {"type": "array", "items": stop, "minItems": 1,
                                                    "maxItems": limits.max_stop}]}),
                "seed": _nullable({"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}),
                "stream": _nullable({"type": "boolean"}),
                "stream_options": _nullable({"type": "object",
                                             "properties": {"include_usage": {"type": "boolean"}}}),
                "user": {"type": "string"},
            },
        },
        "Usage": {"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
                  "properties": {"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
                                 "total_tokens": {"type": "integer"},
                                 "prompt_tokens_details": {"type": "object", "properties": {
                                     "cached_tokens": {"type": "integer"}}}}},
        "ChatCompletion": {
            "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
            "properties": {
                "id": {"type": "string"}, "object": {"type": "string", "enum": ["chat.completion"]},
                "created": {"type": "integer"}, "model": {"type": "string"}, "usage": _ref("Usage"),
                "choices": {"type": "array", "items": {
                    "type": "object", "required": ["index", "message", "finish_reason"],
                    "properties": {
                        "index": {"type": "integer"},
                        "message": {"type": "object", "required": ["role", "content"], "properties": {
                            "role": {"type": "string", "enum": ["assistant"]}, "content": {"type": "string"}}},
                        "finish_reason": {"type": "string", "enum": ["stop", "length", "cancelled"]}}}},
            },
        },
        "Model": {"type": "object", "required": ["id", "object"], "properties": {
            "id": {"type": "string"}, "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer"}, "owned_by": {"type": "string"}, "context_length": {"type": "integer"}}},
        "ModelList": {"type": "object", "required": ["object", "data"], "properties": {
            "object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": _ref("Model")}}},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["message", "type"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "param": _nullable({"type": "string"}), "code": _nullable({"type": "string"})}}}},
    }


def _errors(*statuses: int) -> dict:
    reasons = {400: "invalid request (the message names the field)", 401: "missing or wrong API key",
               403: "image path outside --allow-dir", 404: "unknown model or image file",
               413: "body or image over the limits", 429: "server busy (see Retry-After)",
               500: "the request failed inside the server (this request only)"}
    return {str(s): {"description": reasons[s], "content": {JSON: {"schema": _ref("Error")}}} for s in statuses}


def openapi_document(model: str, limits: Limits, max_body_bytes: int, auth: bool) -> dict:
    """OpenAPI 3.0 for this server: its model id, token/choice/stop limits, and whether a key is needed."""
    secured = {"security": [{"bearer": []}]} if auth else {}
    auth_errors = (401,) if auth else ()
    return {
        "openapi": "3.0.3",
        "info": {"title": "vinstruct", "version": "1",
                 "description": "OpenAI-compatible chat completions with images (LLaVA-style models)."},
        "paths": {
            "/v1/chat/completions": {"post": {
                "operationId": "createChatCompletion", **secured,
                "requestBody": {"required": True, "description": f"JSON, at most {max_body_bytes} bytes",
                                "content": {JSON: {"schema": _ref("ChatCompletionRequest")}}},
                "responses": {
                    "200": {"description": "the reply (server-sent events when stream is true)", "content": {
                        JSON: {"schema": _ref("ChatCompletion")}, "text/event-stream": {"schema": SSE_EVENT}}},
                    **_errors(400, *auth_errors, 403, 404, 413, 429, 500)}}},
            "/v1/models": {"get": {
                "operationId": "listModels", **secured,
                "responses": {"200": {"description": "the one model served",
                                      "content": {JSON: {"schema": _ref("ModelList")}}}, **_errors(*auth_errors)}}},
            "/v1/models/{model_id}": {"get": {
                "operationId": "retrieveModel", **secured,
                "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the model", "content": {JSON: {"schema": _ref("Model")}}},
                              **_errors(*auth_errors, 404)}}},
            "/health": {"get": {
                "operationId": "health",
                "responses": {"200": {"description": "liveness and load", "content": {JSON: {"schema": {
                    "type": "object", "required": ["status"], "properties": {
                        "status": {"type": "string"}, "model": {"type": "string"}, "load": {"type": "integer"}}}}}}}}},
        },
        "components": {
            "schemas": _schemas(model, limits),
            **({"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}} if auth else {}),
        },
    }
