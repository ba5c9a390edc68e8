"""The performance model in-process: KV blocks, prefix caching, queueing, preemption, time.

Time is injected: a recording `sleep` shows exactly which delays the model asked for, and
histograms report modelled seconds, so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import TypeVar

import pytest
from prometheus_client import CollectorRegistry

from inference.simulator.engine import Engine, EngineConfig
from inference.simulator.kvcache import BlockHasher, BlockPool, chain_hash
from inference.simulator.metrics import SimulatorMetrics

MODEL = "sim/model"
T = TypeVar("T")


def _value(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name, {"model_name": MODEL})
    assert value is not None, name
    return value


class _RecordingSleep:
    """Records every delay the engine sleeps for and yields to the loop without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def _engine(**overrides: float) -> tuple[Engine, _RecordingSleep, CollectorRegistry]:
    config = EngineConfig(**{"time_scale": 0.0, **overrides})  # type: ignore[arg-type]
    metrics = SimulatorMetrics(MODEL)
    sleep = _RecordingSleep()
    return Engine(config, metrics, sleep=sleep), sleep, metrics.registry


async def _drain(
    engine: Engine,
    prompt: Sequence[int],
    output: Sequence[int],
    seen: list[tuple[str, int]] | None = None,
    tag: str = "",
) -> list[int]:
    indexes = []
    async with aclosing(engine.generate(prompt, output, finish_reason="stop")) as tokens:
        async for index in tokens:
            indexes.append(index)
            if seen is not None:
                seen.append((tag, index))
    return indexes


def _run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), timeout=10))


# -- the block pool --------------------------------------------------------------------


def test_block_hash_names_the_whole_prefix_not_just_the_block() -> None:
    first = chain_hash(None, [1, 2])
    assert chain_hash(first, [3, 4]) != chain_hash(chain_hash(None, [9, 9]), [3, 4])
    assert chain_hash(first, [3, 4]) == chain_hash(chain_hash(None, [1, 2]), [3, 4])
    hasher = BlockHasher([1, 2, 3, 4, 5], block_size=2)
    assert hasher.hashes(5) == [first, chain_hash(first, [3, 4])]  # partial block unhashed
    assert hasher.hashes(3) == [first]


def test_unused_cached_blocks_count_as_free_and_are_evicted_tail_first() -> None:
    pool = BlockPool(4)
    hashes = [chain_hash(None, [n]) for n in range(3)]
    blocks = pool.take([], 3)
    for block, block_hash in zip(blocks, hashes, strict=True):
        pool.register(block, block_hash)
    assert pool.usage == 0.75
    pool.release(blocks)
    assert pool.usage == 0 and pool.lookup(hashes) == blocks  # still cached while free
    # One never-used block is handed out first, then the released sequence's tail.
    pool.allocate(2)
    assert pool.lookup(hashes) == blocks[:2]
    assert pool.cached_blocks() == 2


def test_a_hit_on_an_idle_cached_block_takes_it_off_the_free_list() -> None:
    pool = BlockPool(2)
    (block,) = pool.take([], 1)
    pool.register(block, b"h")
    pool.release([block])
    assert pool.can_take([block], 1) and not pool.can_take([block], 2)
    assert pool.take([block], 1)[0] == block and pool.usage == 1.0


# -- the engine ------------------------------------------------------------------------


def test_delays_follow_the_model_and_are_multiplied_by_time_scale() -> None:
    engine, sleep, registry = _engine(
        time_scale=0.5, step_base_ms=10, prefill_ms_per_token=2, decode_ms_per_seq=1
    )
    _run(lambda: _drain(engine, list(range(20)), [7, 8, 9]))
    # One step prefills 20 uncached tokens, then two decode steps with a batch of one.
    assert sleep.delays == pytest.approx([0.5 * 0.050, 0.5 * 0.011, 0.5 * 0.011])
    assert engine.steps == 3 and engine.now_s == pytest.approx(0.072)
    # Metrics report modelled seconds, unaffected by the scale.
    assert _value(registry, "vllm:time_to_first_token_seconds_sum") == pytest.approx(0.050)
    assert _value(registry, "vllm:inter_token_latency_seconds_sum") == pytest.approx(0.022)
    assert _value(registry, "vllm:e2e_request_latency_seconds_sum") == pytest.approx(0.072)
    assert _value(registry, "vllm:request_queue_time_seconds_sum") == 0
    assert _value(registry, "vllm:prompt_tokens_total") == 20
    assert _value(registry, "vllm:generation_tokens_total") == 3


def test_a_prompt_longer_than_the_step_budget_is_prefilled_in_chunks() -> None:
    engine, sleep, registry = _engine(
        time_scale=1.0, max_num_batched_tokens=16, step_base_ms=1, prefill_ms_per_token=1
    )
    _run(lambda: _drain(engine, list(range(40)), [1]))
    assert sleep.delays == pytest.approx([0.017, 0.017, 0.009])  # chunks of 16, 16 and 8
    assert _value(registry, "vllm:time_to_first_token_seconds_sum") == pytest.approx(0.043)


def test_repeated_prompt_hits_its_full_blocks_and_prefills_faster() -> None:
    engine, _, registry = _engine(block_size=16, step_base_ms=1, prefill_ms_per_token=1)
    prompt = list(range(1000, 1040))  # 40 tokens: two full blocks and a partial one

    async def scenario() -> None:
        await _drain(engine, prompt, [1])
        assert _value(registry, "vllm:prefix_cache_hits_total") == 0
        await _drain(engine, prompt, [1])

    _run(scenario)
    assert _value(registry, "vllm:prefix_cache_queries_total") == 80
    assert _value(registry, "vllm:prefix_cache_hits_total") == 32
    # 41 ms for the cold prompt, then 1 + (40 - 32) ms for the warm one.
    assert _value(registry, "vllm:time_to_first_token_seconds_sum") == pytest.approx(0.041 + 0.009)


def test_the_last_prompt_token_is_always_recomputed() -> None:
    engine, _, registry = _engine(block_size=16)
    prompt = list(range(32))  # exactly two blocks

    async def scenario() -> None:
        await _drain(engine, prompt, [1])
        await _drain(engine, prompt, [1])

    _run(scenario)
    assert _value(registry, "vllm:prefix_cache_hits_total") == 16


def test_generated_blocks_are_cached_for_a_follow_up_prompt() -> None:
    engine, _, registry = _engine(block_size=4)
    prompt, reply = [1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11]

    async def scenario() -> None:
        await _drain(engine, prompt, reply)
        # The next turn's prompt is the conversation so far plus a new question.
        await _drain(engine, [*prompt, *reply, 12, 13], [1])

    _run(scenario)
    # Tokens 1..8 (two blocks) were computed during the first request and found again.
    assert _value(registry, "vllm:prefix_cache_hits_total") == 8


def test_requests_beyond_max_num_seqs_wait_in_fifo_order() -> None:
    engine, _, registry = _engine(max_num_seqs=1)
    seen: list[tuple[str, int]] = []
    waiting: list[float] = []

    async def watch() -> None:
        while len(seen) < 9:
            waiting.append(_value(registry, "vllm:num_requests_waiting"))
            assert _value(registry, "vllm:num_requests_running") <= 1
            await asyncio.sleep(0)

    async def scenario() -> None:
        await asyncio.gather(
            watch(), *(_drain(engine, [n, 50], [1, 2, 3], seen, tag) for n, tag in enumerate("abc"))
        )

    _run(scenario)
    assert [tag for tag, _ in seen] == list("aaabbbccc")
    assert max(waiting) == 3  # all three queue until the engine's next step admits one
    assert _value(registry, "vllm:num_requests_waiting") == 0
    assert _value(registry, "vllm:request_queue_time_seconds_count") == 3


def test_running_out_of_kv_blocks_preempts_and_everyone_still_finishes() -> None:
    # 6 blocks of 4 tokens; each request grows to 5 blocks, so both cannot stay resident.
    engine, _, registry = _engine(block_size=4, kv_blocks=6)
    seen: list[tuple[str, int]] = []

    async def scenario() -> list[list[int]]:
        return await asyncio.gather(
            _drain(engine, list(range(8)), list(range(12)), seen, "a"),
            _drain(engine, list(range(100, 108)), list(range(12)), seen, "b"),
        )

    results = _run(scenario)
    assert results == [list(range(12)), list(range(12))]
    assert _value(registry, "vllm:num_preemptions_total") >= 1
    assert (
        registry.get_sample_value(
            "vllm:request_success_total", {"model_name": MODEL, "finished_reason": "stop"}
        )
        == 2
    )
    assert engine.pool.usage == 0 and engine.num_running == engine.num_waiting == 0
    assert _value(registry, "vllm:kv_cache_usage_perc") == 0
    # A preempted request recomputes from the cache: some tokens were found again.
    assert _value(registry, "vllm:prefix_cache_hits_total") > 0


def test_decode_steps_slow_down_with_a_bigger_batch() -> None:
    engine, sleep, _ = _engine(
        time_scale=1.0, step_base_ms=10, prefill_ms_per_token=0, decode_ms_per_seq=5
    )

    async def scenario() -> None:
        await _drain(engine, [0], [1, 2])
        await asyncio.gather(*(_drain(engine, [n], [1, 2, 3]) for n in range(3)))

    _run(scenario)
    # Alone: a prefill step, then 10 ms + 1 x 5 ms. Three together share every step.
    assert sleep.delays == pytest.approx([0.010, 0.015, 0.010, 0.025, 0.025])


def test_closing_a_request_early_frees_its_slot_and_blocks_for_the_queue() -> None:
    engine, _, registry = _engine(max_num_seqs=1)

    async def scenario() -> None:
        first = engine.generate([1, 2, 3], list(range(200)), finish_reason="stop")
        assert await anext(first) == 0
        second = asyncio.ensure_future(_drain(engine, [9, 9], [1, 2]))
        while engine.num_waiting == 0:
            await asyncio.sleep(0)
        assert engine.pool.usage > 0
        await first.aclose()  # the client went away
        assert await second == [0, 1]

    _run(scenario)
    assert engine.pool.usage == 0 and engine.num_running == 0
    assert (
        registry.get_sample_value(
            "vllm:request_success_total", {"model_name": MODEL, "finished_reason": "stop"}
        )
        == 1
    )  # only the request that ran to the end


def test_a_latency_spike_delays_only_the_first_token_and_counts_in_ttft() -> None:
    engine, sleep, registry = _engine(
        time_scale=0.1, step_base_ms=5, prefill_ms_per_token=0, decode_ms_per_seq=0
    )

    async def scenario() -> None:
        async with aclosing(
            engine.generate([1], [2, 3], finish_reason="stop", spike_ms=1000)
        ) as tokens:
            assert [i async for i in tokens] == [0, 1]

    _run(scenario)
    # The prefill step, the held first token, then one plain decode step.
    assert sleep.delays == pytest.approx([0.1 * 0.005, 0.1 * 1.0, 0.1 * 0.005])
    assert _value(registry, "vllm:time_to_first_token_seconds_sum") == pytest.approx(1.005)
    assert _value(registry, "vllm:inter_token_latency_seconds_sum") == pytest.approx(0.005)


def test_a_spiked_request_does_not_stall_the_others() -> None:
    engine, _, registry = _engine(step_base_ms=5, prefill_ms_per_token=0, decode_ms_per_seq=0)

    async def scenario() -> None:
        async def spiked() -> None:
            async with aclosing(
                engine.generate([1], [2], finish_reason="stop", spike_ms=1000)
            ) as tokens:
                assert [i async for i in tokens] == [0]

        await asyncio.gather(spiked(), _drain(engine, [5], [1, 2, 3]))

    _run(scenario)
    # 1.005 s for the spiked one, 5 ms for the other, which never waited for the spike.
    assert _value(registry, "vllm:time_to_first_token_seconds_sum") == pytest.approx(1.010)
    assert _value(registry, "vllm:inter_token_latency_seconds_sum") == pytest.approx(0.010)


# -- contention within a step ----------------------------------------------------------


def test_a_long_prefill_slows_another_requests_decode() -> None:
    def itl_sum(with_long_prefill: bool) -> float:
        engine, _, registry = _engine(
            step_base_ms=10, prefill_ms_per_token=0.05, decode_ms_per_seq=0.1
        )

        async def scenario() -> None:
            other: asyncio.Future[list[int]] | None = None
            async with aclosing(
                engine.generate([1, 2, 3], list(range(40)), finish_reason="stop")
            ) as tokens:
                async for index in tokens:
                    if index == 1 and with_long_prefill:
                        # 4000 uncached prompt tokens and a single output token.
                        other = asyncio.ensure_future(_drain(engine, range(9000, 13000), [1]))
            if other is not None:
                assert await other == [0]

        _run(scenario)
        assert _value(registry, "vllm:inter_token_latency_seconds_count") == 39
        return _value(registry, "vllm:inter_token_latency_seconds_sum")

    alone = itl_sum(False)
    assert alone == pytest.approx(39 * 0.0101)
    # The step that prefilled the other request's 4000 tokens took 200 ms longer, and
    # the running request's next token waited for it.
    assert itl_sum(True) - alone == pytest.approx(0.200)


def test_a_cached_prompt_has_a_smaller_modelled_ttft() -> None:
    engine, _, registry = _engine()  # the default costs
    prompt = list(range(5000, 6000))
    ttfts = []

    async def scenario() -> None:
        for _ in range(2):
            await _drain(engine, prompt, [1, 2])
            ttfts.append(_value(registry, "vllm:time_to_first_token_seconds_sum"))

    _run(scenario)
    cold, warm = ttfts[0], ttfts[1] - ttfts[0]
    assert cold == pytest.approx((10 + 0.05 * 1000) / 1000)
    # 62 full blocks (992 tokens) are found again; the last 8 tokens are prefilled.
    assert warm == pytest.approx((10 + 0.05 * 8) / 1000)
    assert warm < cold


def test_shared_prefixes_finish_a_saturating_workload_sooner() -> None:
    def run(shared: bool) -> tuple[float, int]:
        engine, _, registry = _engine(max_num_seqs=8)
        prefix = list(range(100_000, 102_000))

        def prompt(n: int) -> list[int]:
            head = prefix if shared else [n * 10_000 + i for i in range(2000)]
            return [*head, n, n + 1]

        async def scenario() -> None:
            await asyncio.gather(*(_drain(engine, prompt(n), list(range(20))) for n in range(32)))

        _run(scenario)
        assert _value(registry, "vllm:generation_tokens_total") == 32 * 20
        return engine.now_s, engine.steps

    shared_s, shared_steps = run(True)
    distinct_s, distinct_steps = run(False)
    assert shared_s < 0.6 * distinct_s
    assert shared_steps <= distinct_steps


@pytest.mark.parametrize(
    "overrides",
    [{"kv_blocks": 10, "block_size": 16}, {"max_num_seqs": 0}, {"time_scale": -1.0}],
)
def test_impossible_configurations_are_rejected(overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EngineConfig(**overrides).check(max_model_len=512)  # type: ignore[arg-type]
