"""BentoML's request timeout (`traffic.timeout`), with its timer cancelled once the request is answered.

bentoml 1.4's `TimeoutMiddleware` (bentoml/_internal/server/http/traffic.py) schedules
`loop.call_later(timeout, ...)` for every request and never cancels it, so each answered request
stays reachable for `timeout` seconds: the timer, its waiter future and a copy of the request's
context holding its OpenTelemetry span, about 20 objects. At 600 requests/s and a 30 s timeout
that is some 360,000 live objects, which every full garbage collection walks: pauses of 0.15-0.5 s
that stall every connection, the service's p99 (docs/benchmarks.md). Behaviour is otherwise
BentoML's: a 504 when the response has not started within `timeout` seconds.

`check_installed` runs at the service's start-up and stops it if BentoML would build its app with
another class (a BentoML upgrade that moved the lookup); `in_app` finds the middleware in a running
app (the service's /info reports it). The upstream bug report is in docs/serving.md: drop this
module once BentoML cancels the timer itself.
"""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from bentoml._internal.server.base_app import BaseAppFactory
from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse

from components.errors import RecloopError


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


def check_installed() -> None:
    """Raise unless BentoML's own middleware list (the code that builds every app) now holds this class."""
    built = BaseAppFactory.middlewares.fget(SimpleNamespace(timeout=30, max_concurrency=None))
    classes = [m.cls for m in built]
    if classes != [TimeoutMiddleware]:
        raise RecloopError(f"the request-timeout patch is not active: BentoML builds its app with {classes}, "
                           "not components.serving.timeout.TimeoutMiddleware (see docs/serving.md, BentoML timeout)")


def in_app(app) -> bool:
    """Whether the running ASGI app's middleware chain holds this class and not BentoML's original."""
    node, found = getattr(app, "middleware_stack", None) or app, False
    for _ in range(100):  # the chain is a handful of wrappers; the bound keeps a cycle from hanging
        if isinstance(node, TimeoutMiddleware.__bases__[0]):  # BentoML's class, or this one
            if type(node) is not TimeoutMiddleware:
                return False
            found = True
        node = getattr(node, "app", None)
        if node is None:
            break
    return found
