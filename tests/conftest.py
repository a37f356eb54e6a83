"""Fixtures shared across test folders."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def prefect_api():
    """One throwaway Prefect server (SQLite in a temp folder) for the whole pytest process.

    One per process, not one per folder: Prefect's events worker starts once per process and keeps
    the API of the server it first met, so under a second harness it looks up the new server's flow
    runs on the old one, gets 404 and drops the events (the drift event among them). A cold server
    start on a loaded machine can take a minute, hence the generous timeout.
    """
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with prefect_test_harness(server_startup_timeout=180):
        yield
