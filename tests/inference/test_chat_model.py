"""The LangChain chat model backed by the pool, against a simulator process."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate

from inference import Endpoint, Pool, PoolChatModel, PoolUnavailable, Priority


@pytest.fixture
def model(simulator: Endpoint) -> PoolChatModel:
    pool = Pool([simulator])
    chat = PoolChatModel(
        pool=pool,
        model=simulator.model,
        max_tokens=64,
        temperature=0.0,
        affinity_key="conv-1",
        tenant="t-1",
        priority=Priority.REALTIME,
    )
    yield chat
    pool.close()


def test_invoke_returns_text_usage_and_the_serving_endpoint(model, simulator):
    reply = model.invoke([SystemMessage("be brief"), HumanMessage("hello there")])
    assert isinstance(reply, AIMessage)
    assert "hello there" in reply.content and "simulated" in reply.content
    usage = reply.usage_metadata
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    meta = reply.response_metadata
    assert meta["endpoint"] == simulator.name and meta["endpoint_url"] == simulator.url
    assert meta["token_usage"]["prompt_tokens"] == usage["input_tokens"]
    assert 0 <= meta["ttft_ms"] <= meta["latency_ms"]
    assert meta["attempts"] == 1 and meta["finish_reason"] == "stop"


def test_prompt_template_pipeline(model):
    chain = ChatPromptTemplate.from_messages([("system", "{sys}"), ("human", "{q}")]) | model
    reply = chain.invoke({"sys": "You are {not a variable}", "q": "what time is it?"})
    assert "what time is it?" in reply.content


def test_stream_yields_the_text_then_a_chunk_with_usage(model):
    chunks = list(model.stream([HumanMessage("stream me please")]))
    assert len(chunks) > 2
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    text = "".join(str(c.content) for c in chunks)
    assert "stream me please" in text
    last = chunks[-1]
    assert last.content == "" and last.usage_metadata is not None
    assert last.usage_metadata["output_tokens"] > 0
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged.content == text
    assert merged.usage_metadata == last.usage_metadata
    assert merged.response_metadata["endpoint"] == last.response_metadata["endpoint"]


def test_streamed_and_invoked_text_agree(model):
    invoked = model.invoke([HumanMessage("same answer?")]).content
    streamed = "".join(str(c.content) for c in model.stream([HumanMessage("same answer?")]))
    assert invoked == streamed


def test_async_variants(model):
    async def run() -> tuple[AIMessage, list[AIMessageChunk]]:
        reply = await model.ainvoke([HumanMessage("async hello")])
        chunks = [c async for c in model.astream([HumanMessage("async stream")])]
        return reply, chunks

    reply, chunks = asyncio.run(run())
    assert "async hello" in reply.content
    assert "async stream" in "".join(str(c.content) for c in chunks)
    assert chunks[-1].usage_metadata is not None


def test_stop_sequences_reach_the_server(model):
    full = model.invoke([HumanMessage("alpha beta gamma")]).content
    assert "beta" in full
    cut = model.invoke([HumanMessage("alpha beta gamma")], stop=["beta"]).content
    assert "beta" not in cut and full.startswith(cut)


def test_pool_errors_surface_as_typed_exceptions(simulator):
    with Pool([]) as empty:
        model = PoolChatModel(pool=empty, model=simulator.model)
        with pytest.raises(PoolUnavailable, match="no inference endpoints"):
            model.invoke("hi")
