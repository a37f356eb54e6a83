"""Patience for Prefect's temporary local server, which one-off runs use when PREFECT_API_URL is unset."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

# Its first start creates and migrates a SQLite database: on a busy 2-core machine that takes longer
# than Prefect's default 20 s, and the run would fail before it began.
STARTUP_SECONDS = 180


@contextmanager
def patient_local_api() -> Iterator[None]:
    """Let the temporary server take up to STARTUP_SECONDS to start (or longer, if settings already say so)."""
    seconds = max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), STARTUP_SECONDS)
    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: seconds}):
        yield
