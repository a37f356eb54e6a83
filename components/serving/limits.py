"""Request limits from params (serve.*): checks that answer 400/413 with what to change, never a 500."""
from __future__ import annotations

import json
from http import HTTPStatus

from bentoml.exceptions import BentoMLException

from components.config import ServeConfig
from components.serving.logs import refused
from components.serving.schemas import (
    FeedbackRequest,
    RecommendRequest,
    RequestError,
    SimilarRequest,
)


def check_k(k: int, cfg: ServeConfig) -> None:
    if not 1 <= k <= cfg.max_k:
        raise RequestError(f"k must be between 1 and {cfg.max_k}, got {k}")


def check_text(text: str | None, cfg: ServeConfig) -> None:
    if text is not None and not text.strip():
        raise RequestError("text is empty: send a few words describing what to find, or leave text out")
    if text is not None and len(text) > cfg.max_text_chars:
        raise RequestError(f"text has {len(text):,} characters; at most {cfg.max_text_chars:,} are accepted")


def check_recommend(request: RecommendRequest, cfg: ServeConfig) -> None:
    check_k(request.k, cfg)
    check_text(request.text, cfg)
    if request.history is not None:
        if not request.history:
            raise RequestError("history is empty: send at least one item id, or leave history out "
                               "(a user_id alone uses the stored history; nothing at all gets the cold-start answer)")
        if len(request.history) > cfg.max_history:
            raise RequestError(f"history has {len(request.history):,} items; at most {cfg.max_history:,} are "
                               "accepted (the model reads only the most recent ones anyway)")
    if len(request.filters.exclude_items) > cfg.max_history:
        raise RequestError(f"filters.exclude_items has {len(request.filters.exclude_items):,} ids; "
                           f"at most {cfg.max_history:,} are accepted")


def check_similar(request: SimilarRequest, cfg: ServeConfig) -> None:
    if (request.item_id is None) == (request.text is None):
        raise RequestError("send exactly one of item_id (items like this one) or text (items matching a description)")
    check_k(request.k, cfg)
    check_text(request.text, cfg)


def check_feedback(request: FeedbackRequest, cfg: ServeConfig) -> None:
    if not request.events:
        raise RequestError("events is empty: send at least one {item_id, event} object")
    if len(request.events) > cfg.max_feedback_events:
        raise RequestError(f"{len(request.events):,} events in one call; send at most {cfg.max_feedback_events:,} "
                           "per call")


class PayloadLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 before anything parses it.

    A declared Content-Length over the limit is refused at once. Bodies without one (chunked) are
    counted as the app reads them; past the limit the read fails with a 413 error, which BentoML
    answers as such. Nothing is buffered or copied on the way.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    await self._refuse(scope, int(value), send)
                    return
                await self.app(scope, receive, send)  # the server stops reading at the declared length
                return
        size = 0

        async def counted() -> dict:
            nonlocal size
            message = await receive()
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                raise BentoMLException(self._message(size), error_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return message

        await self.app(scope, counted, send)

    def _message(self, size: int) -> str:
        return (f"request body of {size:,} bytes is over the limit of {self.max_bytes:,} "
                "(serve.max_payload_bytes): send fewer items or split the request")

    async def _refuse(self, scope, size: int, send) -> None:
        refused(scope.get("method", "?"), scope.get("path", "?"), 413, self._message(size))
        body = json.dumps({"error": self._message(size)}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
