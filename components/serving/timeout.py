"""BentoML's request timeout (`traffic.timeout`), with its timer cancelled once the request is answered.

bentoml 1.4's `TimeoutMiddleware` (bentoml/_internal/server/http/traffic.py) schedules
`loop.call_later(timeout, ...)` for every request and never cancels it, so each answered request
stays reachable for `timeout` seconds: the timer, its waiter future and a copy of the request's
context holding its OpenTelemetry span, about 20 objects. At 600 requests/s and a 30 s timeout
that is some 360,000 live objects, which every full garbage collection walks: pauses of 0.15-0.5 s
that stall every connection, the service's p99 (docs/benchmarks.md). Behaviour is otherwise
BentoML's: a 504 when the response has not started within `timeout` seconds.
"""
from __future__ import annotations

import asyncio

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse


class TimeoutMiddleware(traffic.TimeoutMiddleware):
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def started(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        answer = asyncio.ensure_future(self.app(scope, receive, started))
        try:
            await waiter
        except asyncio.TimeoutError:
            if answer.cancel():
                await JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                   status_code=504)(scope, receive, send)
            return
        finally:
            timer.cancel()
        await answer


def install() -> None:
    """Have BentoML build its apps with this middleware: it looks the class up in `traffic` when it
    builds an app, which happens after the service module is imported."""
    traffic.TimeoutMiddleware = TimeoutMiddleware
