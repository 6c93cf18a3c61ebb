"""Errors the gateway answers itself, in OpenAI's error shape, so that OpenAI clients raise the
matching exception (NotFoundError, ...) with the gateway's message."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: How many model names a 404 lists before it counts the rest.
LISTED_MODELS = 50


@dataclass
class GatewayError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)

    def event(self) -> bytes:
        """The error as a server-sent event, for a stream that already began."""
        return f"data: {json.dumps(self.body())}\n\n".encode()


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)


def unknown_model(model: str, known: Iterable[str]) -> GatewayError:
    names = sorted(known)
    shown = ", ".join(names[:LISTED_MODELS])
    if len(names) > LISTED_MODELS:
        shown += f" and {len(names) - LISTED_MODELS} more (GET /v1/models lists them all)"
    listing = f"models served here: {shown}" if names else "no model is served here yet"
    return GatewayError(
        404, f"model {model!r} does not exist: {listing}", code="model_not_found", param="model"
    )


def missing_capability(model: str, capability: str, where: str) -> GatewayError:
    return GatewayError(
        501,
        f"model {model!r} ({where}) does not support {capability}: no backend serving it offers it",
        code="capability_not_supported",
        param="model",
    )


def not_ready(model: str, waited: float, retry_after: int, phases: str, coming: bool) -> GatewayError:
    if coming:
        message = f"model {model!r} is not being served yet ({phases}); waited {waited:g}s, try again"
    else:
        message = f"model {model!r} has no pod serving it and none on its way ({phases})"
    return GatewayError(
        503,
        message,
        type="service_unavailable",
        code="model_not_ready",
        param="model",
        headers={"Retry-After": str(retry_after)},
    )


def upstream_failed(model: str, tried: int, last: str) -> GatewayError:
    return GatewayError(
        502,
        f"no pod serving {model!r} answered ({tried} tried); the last said: {last}",
        type="server_error",
        code="upstream_unavailable",
    )


def stream_broken(model: str, pod: str, reason: str) -> GatewayError:
    return GatewayError(
        502,
        f"the stream from {pod} serving {model!r} broke off: {reason}",
        type="server_error",
        code="upstream_stream_broken",
    )


def no_key() -> GatewayError:
    return GatewayError(
        401,
        "this gateway needs a key: send `Authorization: Bearer <key>` with a key from a Secret "
        "labelled llmop.dev/gateway-key=true and llmop.dev/use=true (docs/gateway.md)",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def unknown_key() -> GatewayError:
    return GatewayError(
        401,
        "the key sent is not one of this gateway's keys (a Secret labelled "
        "llmop.dev/gateway-key=true and llmop.dev/use=true, in a namespace the gateway serves)",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def not_permitted(model: str, source: str, reach: str) -> GatewayError:
    return GatewayError(
        403,
        f"the key of Secret {source} may not use model {model!r}: no backend it may reach serves it. "
        f"It may reach {reach}",
        type="permission_error",
        code="model_not_permitted",
        param="model",
    )
