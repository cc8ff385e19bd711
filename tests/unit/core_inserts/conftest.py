"""Every test here runs twice: through harness's Core inserts, and through the ORM's flush they replace.

The two must agree: the ORM's flush is what users expect, and the fallback harness takes when it
cannot insert with Core.
"""

from __future__ import annotations

import pytest

from harness.factories import _Batch


@pytest.fixture(params=["core", "orm"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "orm":
        monkeypatch.setattr(_Batch, "_core_insert_order", lambda self, session, classes, returning: None)
    return str(request.param)
