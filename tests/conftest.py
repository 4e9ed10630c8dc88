"""Shared test fixtures.

Planning results are memoised per process (hal.lowering.memo: plans, fusion vetoes). Each
test starts with empty memos, so a test that monkeypatches a planner or a lowering switch
is never served an entry an earlier test computed with the unpatched code."""

import pytest


@pytest.fixture(autouse=True)
def _fresh_planning_memos():
    from hal.lowering.memo import clear_all

    clear_all()
    yield
