"""The Hypothesis profile of tests/conftest.py: registered, and loaded when CI=true."""

import os

import pytest
from hypothesis import settings


def test_ci_profile_is_derandomized_and_prints_blobs():
    ci = settings.get_profile("ci")
    assert ci.derandomize is True and ci.print_blob is True
    assert ci.deadline is None and ci.database is None  # no timing flakes, nothing replayed from a stale database


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="checks the profile CI runs with (CI=true)")
def test_ci_loads_the_profile():
    assert settings().derandomize is True and settings().print_blob is True
