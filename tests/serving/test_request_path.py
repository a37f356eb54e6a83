"""The fresh request path's shortcuts answer as the long way does: the split like head, the counters summed
on the loop, the look at the log skipped after the process's own commits, the malloc settings."""
from __future__ import annotations

import asyncio

import torch
from prometheus_client import CollectorRegistry, Counter

from components.serving.feedback import FeedbackLog
from components.serving.fresh import AcknowledgedEvents
from components.serving.heap import keep_freed_memory
from components.serving.tally import Tally


def test_the_split_like_head_gives_the_heads_probabilities(bundle):
    model = bundle.trained.model.eval()
    with torch.inference_mode():
        table = model.catalog()
    head = model.task_heads["like"]
    scorer = head.predict_over_catalog(table)
    generator = torch.Generator().manual_seed(3)
    states = torch.randn(5, table.shape[1], generator=generator)
    owner = torch.randint(0, 5, (40,), generator=generator)
    rows = torch.randint(0, len(table), (40,), generator=generator)
    with torch.inference_mode():
        expected = head.predict(states[owner], table[rows])
    torch.testing.assert_close(scorer(states, owner, rows), expected, rtol=1e-5, atol=1e-6)


def test_the_tally_adds_every_increment_once_flushed():
    registry = CollectorRegistry()
    answers = Counter("answers", "answers", ["strategy"], registry=registry)
    unknown = Counter("unknown", "unknown ids", registry=registry)
    Tally.declare(answers, ["history", "text"])
    assert registry.get_sample_value("answers_total", {"strategy": "text"}) == 0

    async def serve() -> float | None:
        tally = Tally(every=0.05)
        for _ in range(7):
            tally.add(answers, "history")
        tally.add(unknown, None, 3)
        before = registry.get_sample_value("answers_total", {"strategy": "history"})
        await asyncio.sleep(0.2)
        tally.add(answers, "history")  # after a flush: the next one counts it
        await asyncio.sleep(0.2)
        return before

    assert asyncio.run(serve()) == 0  # summed on the loop, not yet written
    assert registry.get_sample_value("answers_total", {"strategy": "history"}) == 8
    assert registry.get_sample_value("unknown_total") == 3


def test_refresh_after_own_commits_and_after_another_writers(tmp_path):
    path = tmp_path / "feedback.db"
    own, other = FeedbackLog(path).open(), FeedbackLog(path).open()  # two writers: this worker and another
    fresh = AcknowledgedEvents(path, since=0).open()
    click = {"event": "click", "timestamp": 1_700_000_000, "source": "client", "value": 1.0}
    own.append([{**click, "user_id": "1", "item_id": "10"}])
    fresh.refresh(own.commits)  # own commit: read without the look
    assert [e.item_id for e in fresh.of("1").recent] == ["10"]
    other.append([{**click, "user_id": "1", "item_id": "11"}])
    fresh.refresh(own.commits)  # own count unchanged: the look still sees the other writer's commit
    assert [e.item_id for e in fresh.of("1").recent] == ["10", "11"]
    fresh.refresh(own.commits)  # nothing new: nothing read twice
    assert fresh.of("1").count == 2
    for log in (own, other):
        log.close()
    fresh.close()


def test_malloc_settings_apply_on_glibc():
    assert keep_freed_memory()
