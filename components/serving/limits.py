"""Request limits from params (serve.*): checks that answer 400/413 with what to change, never a 500."""
from __future__ import annotations

import json

from components.config import ServeConfig
from components.serving.schemas import FeedbackRequest, RecommendRequest, RequestError, SimilarRequest


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

    Checks Content-Length when sent and counts the bytes of chunked bodies, which it then replays
    to the app, so the limit holds whatever the client claims.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(int(declared), send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._refuse(size, send)
                return
        body = b"".join(chunks)
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)

    async def _refuse(self, size: int, send) -> None:
        body = json.dumps({"error": f"request body of {size:,} bytes is over the limit of {self.max_bytes:,} "
                                    "(serve.max_payload_bytes): send fewer items or split the request"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict], then=None):
    """A `receive` that hands out `messages`, then defers to the real `receive` (disconnects)."""
    pending = list(messages)

    async def receive() -> dict:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
