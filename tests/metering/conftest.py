from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _fresh_metering_caches() -> Iterator[None]:
    from switchboard.licensing.services import limits_cache_clear
    from switchboard.metering import admission, alerts

    limits_cache_clear()
    alerts.cache_clear()
    admission.redis_reset()
    yield
    limits_cache_clear()
    alerts.cache_clear()
