"""The pool and the LangChain model against both peers (simulator and real vLLM).

Real vLLM serves random weights, so the assertions are about routing, accounting and
typed errors, never about the generated text.
"""

from __future__ import annotations

import socket

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.prompts import ChatPromptTemplate

from inference import (
    ChatRequest,
    ContextTooLong,
    Endpoint,
    Pool,
    PoolChatModel,
    RouteContext,
    Timeouts,
    TokenDelta,
)
from tests.vllm.conftest import MODEL

pytestmark = pytest.mark.vllm


def _dead_endpoint() -> Endpoint:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return Endpoint(name="dead", url=f"http://127.0.0.1:{port}", model=MODEL)


@pytest.fixture
def pool(server_url: str) -> Pool:
    live = Endpoint(name="live", url=server_url, model=MODEL)
    with Pool([_dead_endpoint(), live], timeouts=Timeouts(connect=1, total=120)) as pool:
        yield pool


def _request(text: str = "hello", max_tokens: int = 12) -> ChatRequest:
    return ChatRequest(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        max_tokens=max_tokens,
        temperature=0.0,
    )


def test_pool_fails_over_from_a_dead_endpoint_and_accounts_usage(pool):
    # Whichever endpoint the ring puts first, some conversation keys start on the dead one.
    results = [pool.chat(_request(), RouteContext(affinity_key=f"c-{i}")) for i in range(6)]
    assert {r.endpoint.name for r in results} == {"live"}
    assert any(r.attempts == 2 for r in results)
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in results)


def test_pool_stream_yields_tokens_that_make_up_the_result(pool):
    items = list(pool.stream(_request(max_tokens=16), RouteContext(affinity_key="s")))
    deltas = [i.text for i in items if isinstance(i, TokenDelta)]
    result = items[-1]
    assert "".join(deltas) == result.text
    assert result.completion_tokens > 0 and 0 <= result.ttft_ms <= result.latency_ms


def test_context_too_long_is_typed_and_not_failed_over(pool):
    with pytest.raises(ContextTooLong):
        pool.chat(_request(max_tokens=5000), RouteContext(affinity_key="x"))
    assert all(
        status.breaker == "closed" for status in pool.snapshot() if status.endpoint.name == "live"
    )


def test_langchain_model_invoke_and_stream(pool):
    model = PoolChatModel(pool=pool, model=MODEL, max_tokens=12, temperature=0.0, affinity_key="lc")
    chain = ChatPromptTemplate.from_messages([("system", "{sys}"), ("human", "{q}")]) | model
    reply = chain.invoke({"sys": "be brief", "q": "hi"})
    assert reply.usage_metadata["output_tokens"] > 0
    assert reply.response_metadata["endpoint"] == "live"
    chunks = list(model.stream([HumanMessage("hi again")]))
    last = chunks[-1]
    assert last.content == "" and last.usage_metadata["output_tokens"] > 0
    assert last.response_metadata["endpoint"] == "live"
    # Real vLLM may send empty deltas, so count text chunks only on the simulator's side.
    assert len(chunks) >= 2
