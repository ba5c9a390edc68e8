from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from connectors.dingtalk import DingTalkSender
from tests.connectors.dingtalk.helpers import Clock
from tests.support.fake_dingtalk import FakeDingTalk


@pytest.fixture
def ding() -> Iterator[FakeDingTalk]:
    with FakeDingTalk() as fake:
        yield fake


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    # trust_env=False: a proxy from the environment must not intercept 127.0.0.1.
    with httpx.Client(trust_env=False) as c:
        yield c


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sender(ding: FakeDingTalk, client: httpx.Client, clock: Clock) -> DingTalkSender:
    return DingTalkSender(client, api_base=ding.base_url, clock=clock)
