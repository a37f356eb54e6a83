"""The request timeout middleware: answers pass, a slow answer gets a 504, an answered request is let go."""
from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref

import uvloop

from components.serving.timeout import TimeoutMiddleware

REQUEST = contextvars.ContextVar("request")


class RequestState:
    """Stands for what a request leaves in its context (BentoML's tracing span, for one)."""


def answer_after(seconds: float):
    async def app(scope, receive, send) -> None:
        await asyncio.sleep(seconds)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    return app


async def call(middleware: TimeoutMiddleware) -> tuple[list[dict], weakref.ref]:
    """One request in a task of its own, as the server runs it; the state it put in its context, weakly."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def request() -> weakref.ref:
        state = RequestState()
        REQUEST.set(state)
        await middleware({"type": "http"}, receive, send)
        return weakref.ref(state)

    return sent, await asyncio.create_task(request())


def test_an_answer_passes_and_its_request_is_released_at_once():
    async def main() -> None:
        sent, state = await call(TimeoutMiddleware(answer_after(0), timeout=30))
        assert [m.get("status") for m in sent] == [200, None] and sent[1]["body"] == b"ok"
        await asyncio.sleep(0)  # the loop lets go of the finished task's callbacks
        gc.collect()
        # BentoML's own middleware keeps the request's context alive in a pending 30 s timer.
        assert state() is None

    # uvicorn's loop when uvloop is installed (bentofile.yaml); asyncio's own loop keeps a cancelled
    # timer, context included, until it sweeps its cancelled timers (once they are over half of them).
    uvloop.run(main())


def test_a_slow_answer_gets_a_504_after_the_timeout():
    async def main() -> None:
        sent, _ = await call(TimeoutMiddleware(answer_after(5), timeout=0.05))
        assert sent[0]["status"] == 504 and b"0.05 seconds" in sent[1]["body"]

    asyncio.run(main())
