"""Micro-batching on the event loop: concurrent requests that need the encoder share one encoder call.

A worker answers requests on its event loop (a hand-over to a thread can cost a 5 ms switch interval,
docs/serving.md). The requests that need the encoder (an ad-hoc history, a known user with new events:
`BundleRecommender.start` returns an `Encoding`) wait here instead of running it one by one. The first
one to arrive schedules a flush with `call_soon`, which runs once the loop has been through the
callbacks that were already ready: every request whose handler got this far in the meantime joins the
same `BundleRecommender.finish` call (one encoder call, one retrieval, one product and top-k). While
each pass brings more requests (and the batch is below `max_size`), the flush waits one more pass, at
most `EXTRA_PASSES` times (a trickle of them amid other traffic must not hold the first one long). No
timer: a lone request waits one pass of an idle loop (microseconds); under load the batches grow by
themselves. In process an ad-hoc answer costs 0.67 ms alone, 0.22 ms each in a batch of 8, 0.18 ms in
a batch of 32 (docs/benchmarks.md).

The batch runs on the loop, not in a thread of its own: torch lets go of the GIL inside each kernel,
but the encoder thread then has to win it back from the busy loop at every one of its ~100 calls,
and measured under load that cost more than the kernels it took off the loop (docs/benchmarks.md).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from components.serving.recommender import BundleRecommender, Encoding
from components.serving.schemas import RecommendResponse

# Histories per encoder call: beyond 32 the cost per history grew again in process (0.18 ms each at 32,
# 0.36 at 64), and the first request of a huge batch would wait for all of it.
MAX_BATCH = 32
EXTRA_PASSES = 2

Waiting = tuple[BundleRecommender, Encoding, asyncio.Future]


class EncoderBatcher:
    """Queues `Encoding`s from the event loop and answers them in batches; `observe(size)` sees each batch."""

    def __init__(self, max_size: int = MAX_BATCH, observe: Callable[[int], None] | None = None):
        self.max_size = max_size
        self.observe = observe
        self._pending: list[Waiting] = []
        self._scheduled = False
        self._seen = 0  # how many were waiting at the last pass
        self._passes = 0  # passes waited for this batch

    async def recommend(self, recommender: BundleRecommender, encoding: Encoding) -> RecommendResponse:
        """The answer to `encoding`, computed with whatever else is waiting (call on the event loop)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((recommender, encoding, future))
        if not self._scheduled:
            self._scheduled, self._seen, self._passes = True, len(self._pending), 0
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        if self._seen < len(self._pending) < self.max_size and self._passes < EXTRA_PASSES:  # still growing
            self._seen, self._passes = len(self._pending), self._passes + 1
            loop.call_soon(self._flush)
            return
        batch, self._pending = self._pending[:self.max_size], self._pending[self.max_size:]
        if self._pending:
            self._seen, self._passes = len(self._pending), 0
            loop.call_soon(self._flush)
        else:
            self._scheduled = False
        waiting = [w for w in batch if not w[2].done()]  # a client gone (cancelled) needs no answer
        if self.observe is not None and waiting:
            self.observe(len(waiting))
        # A reload between a request's start and this flush: each answer comes from the model it started on.
        groups: dict[int, list[Waiting]] = {}
        for w in waiting:
            groups.setdefault(id(w[0]), []).append(w)
        for group in groups.values():
            answer_batch(group)


def answer_batch(group: list[Waiting]) -> None:
    """Resolve each future of one recommender's batch; if the batch fails, each request alone, so that a
    request that fails (a 400, say) fails by itself."""
    try:
        answers = group[0][0].finish([encoding for _, encoding, _ in group])
    except Exception as error:
        if len(group) == 1:
            group[0][2].set_exception(error)
        else:
            for waiting in group:
                answer_batch([waiting])
        return
    for (_, _, future), answer in zip(group, answers):
        future.set_result(answer)
