"""The yardstick for bench/serve_load.py: a BentoML endpoint that does nothing, with the service's own settings.

Same workers, traffic settings and garbage-collector settling as RecloopService, a small pydantic
request and response, no model: what BentoML itself costs per request on this machine.
"""
from __future__ import annotations

import bentoml
from pydantic import BaseModel

from components.serving.service import SERVER_SETTINGS, settle_heap


class Ping(BaseModel):
    user_id: str = ""


class Pong(BaseModel):
    user_id: str
    ok: bool = True


@bentoml.service(name="trivial", **SERVER_SETTINGS)
class Trivial:
    def __init__(self) -> None:
        settle_heap()

    @bentoml.api
    async def ping(self, request: Ping, /) -> Pong:
        return Pong(user_id=request.user_id)
