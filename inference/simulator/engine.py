"""The simulator's performance model: a continuous-batching engine with a paged KV cache.

Defaults describe roughly a 7B model on one data-centre GPU (an A100/H100-class card).
Every request is an asyncio task that goes through these stages:

1. **Queue.** At most `max_num_seqs` (default 256) sequences run at once. Others wait in
   one FIFO queue (``vllm:num_requests_waiting``); the head must be admitted before anyone
   behind it, as with vLLM's first-come-first-served policy.
2. **Admission and prefix caching.** The KV cache has `kv_blocks` (default 2000) blocks of
   `block_size` (default 16) tokens, see `inference.simulator.kvcache`. On admission the
   prompt's full blocks are looked up by chained block hash; the longest cached run is
   reused and only the rest is allocated. As in vLLM the last prompt token is always
   recomputed, so a hit covers at most the full blocks within the first ``len - 1``
   tokens. ``vllm:prefix_cache_queries_total`` counts the tokens looked up and
   ``vllm:prefix_cache_hits_total`` the tokens found. The head of the queue waits until
   its uncached blocks fit (cached blocks nobody uses count as free and are evicted LRU).
3. **Prefill.** The first token appears after
   ``ttft_base_ms + prefill_ms_per_token * uncached_prompt_tokens`` (defaults 20 ms and
   0.05 ms, i.e. about 20k prompt tokens/s), plus any injected latency spike.
4. **Decode.** Each further token takes ``decode_ms + decode_ms_per_seq * running``
   (defaults 12 ms and 0.05 ms: ~83 tokens/s alone, ~40 tokens/s per sequence with a full
   batch of 256). A sequence holds blocks for every token fed through the model so far,
   taking a new block whenever it crosses a block boundary; full blocks of generated
   tokens are cached too.
5. **Preemption.** When a sequence needs a block and none is free, the most recently
   admitted running sequence is preempted (possibly the one asking), as vLLM does: its
   blocks are released (they stay cached until evicted), it goes back to the *front* of
   the queue, and on readmission it recomputes prompt plus generated tokens as a prefill,
   usually mostly from the prefix cache. ``vllm:num_preemptions_total`` counts these. The
   configuration is rejected unless the cache holds at least one `max_model_len` sequence,
   so a lone sequence can always finish.

Simplifications: prefill of one request never stalls another's decode (as if chunked
prefill overlapped perfectly), and a step lost to preemption is simply discarded.

**Time.** Every modelled delay is multiplied by `time_scale` (default 1.0) before it is
slept, so tests and benchmarks can run the same model faster. Latency histograms record
*modelled* seconds, not wall clock: queueing after a real wait counts as that wall time
divided by `time_scale`, a request admitted on arrival has a queue time of exactly 0, and
everything else is the model's own arithmetic. A request served alone therefore reports a
TTFT of exactly ``ttft_base_ms + prefill_ms_per_token * uncached``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from inference.simulator.kvcache import BlockHasher, BlockPool
from inference.simulator.metrics import SimulatorMetrics

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 256
    kv_blocks: int = 2000
    block_size: int = 16
    ttft_base_ms: float = 20.0
    prefill_ms_per_token: float = 0.05
    decode_ms: float = 12.0
    decode_ms_per_seq: float = 0.05
    time_scale: float = 1.0

    def check(self, max_model_len: int) -> None:
        """Raise ValueError for settings the model cannot run with."""
        for name in ("max_num_seqs", "kv_blocks", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "ttft_base_ms",
            "prefill_ms_per_token",
            "decode_ms",
            "decode_ms_per_seq",
            "time_scale",
        ):
            if not getattr(self, name) >= 0:  # also rejects NaN
                raise ValueError(f"{name} must be >= 0")
        if self.kv_blocks * self.block_size < max_model_len:
            # vLLM refuses to start for the same reason: one full-length sequence must fit,
            # or preemption could never let it finish.
            raise ValueError(
                f"kv_blocks * block_size ({self.kv_blocks * self.block_size} tokens) must "
                f"hold at least max_model_len ({max_model_len}) tokens"
            )


@dataclass(eq=False)
class _Sequence:
    prompt_len: int
    output_len: int
    hasher: BlockHasher
    admitted: asyncio.Future[None]
    spike_s: float
    blocks: list[int] = field(default_factory=list)
    registered: int = 0  # leading blocks already offered to the prefix cache
    emitted: int = 0
    running: bool = False
    epoch: int = 0  # bumped on every admission, so a step lost to preemption is noticed
    uncached: int = 0  # tokens the next prefill must compute (set on each admission)
    prefill_pending: bool = False
    queued_at: float | None = None  # wall clock when queued, None if not yet decided
    ever_admitted: bool = False
    model_s: float = 0.0  # modelled seconds since arrival
    last_token_s: float = 0.0


class Engine:
    """Schedules simulated sequences onto batch slots and KV blocks, and paces their tokens."""

    def __init__(
        self,
        config: EngineConfig,
        metrics: SimulatorMetrics,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.pool = BlockPool(config.kv_blocks)
        self._sleep = sleep
        self._clock = clock
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def prefill_ms(self, uncached_tokens: int) -> float:
        cfg = self.config
        return cfg.ttft_base_ms + cfg.prefill_ms_per_token * uncached_tokens

    def decode_ms(self) -> float:
        cfg = self.config
        return cfg.decode_ms + cfg.decode_ms_per_seq * len(self._running)

    async def generate(
        self,
        prompt_ids: Sequence[int],
        output_ids: Sequence[int],
        *,
        finish_reason: str,
        spike_ms: float = 0.0,
    ) -> AsyncGenerator[int, None]:
        """Yield the index of each output token when the model would produce it.

        Closing the generator early (client gone, injected crash) frees everything the
        sequence holds; running to the end also records it as a success.
        """
        loop = asyncio.get_running_loop()
        seq = _Sequence(
            prompt_len=len(prompt_ids),
            output_len=len(output_ids),
            hasher=BlockHasher([*prompt_ids, *output_ids], self.config.block_size),
            admitted=loop.create_future(),
            spike_s=spike_ms / 1000.0,
        )
        self._waiting.append(seq)
        self._schedule()
        if not seq.running:
            seq.queued_at = self._clock()
        self._update_gauges()
        try:
            while seq.emitted < seq.output_len:
                if not seq.running:
                    await seq.admitted
                    continue
                epoch = seq.epoch
                if seq.prefill_pending:
                    step_s = self.prefill_ms(seq.uncached) / 1000.0
                elif self._reserve_next(seq):
                    step_s = self.decode_ms() / 1000.0
                else:
                    continue  # preempted itself to make room; back to the queue
                # A spike stalls only the first token and is charged once, even if the
                # step it delays is later lost to preemption.
                spike_s, seq.spike_s = seq.spike_s, 0.0
                seq.model_s += spike_s
                await self._sleep((step_s + spike_s) * self.config.time_scale)
                if seq.epoch != epoch or not seq.running:
                    continue  # preempted mid-step: the token was never produced
                seq.model_s += step_s
                self._emit(seq)
                yield seq.emitted - 1
            self.metrics.success(finish_reason)
            self.metrics.e2e.observe(seq.model_s)
        finally:
            self._drop(seq)

    # -- scheduling -----------------------------------------------------------------------

    def _schedule(self) -> None:
        """Admit from the head of the queue while a slot and enough blocks are free."""
        cfg = self.config
        while self._waiting and len(self._running) < cfg.max_num_seqs:
            seq = self._waiting[0]
            tokens = seq.prompt_len + seq.emitted
            # The last token is always recomputed, so only blocks before it can hit.
            hits = self.pool.lookup(seq.hasher.hashes(tokens - 1))
            needed = math.ceil(tokens / cfg.block_size) - len(hits)
            if not self.pool.can_take(hits, needed):
                break
            self._waiting.popleft()
            seq.blocks = self.pool.take(hits, needed)
            seq.registered = len(hits)
            self._register_full_blocks(seq, tokens)
            hit_tokens = len(hits) * cfg.block_size
            self.metrics.prefix_queries.inc(tokens)
            self.metrics.prefix_hits.inc(hit_tokens)
            seq.uncached = tokens - hit_tokens
            seq.prefill_pending = True
            seq.running = True
            seq.epoch += 1
            waited = self._waited_model_s(seq)
            seq.model_s += waited
            if not seq.ever_admitted:
                seq.ever_admitted = True
                self.metrics.queue_time.observe(waited)
            self._running.append(seq)
            if not seq.admitted.done():
                seq.admitted.set_result(None)
        self._update_gauges()

    def _waited_model_s(self, seq: _Sequence) -> float:
        scale = self.config.time_scale
        if seq.queued_at is None or scale == 0:
            return 0.0
        return max(0.0, self._clock() - seq.queued_at) / scale

    def _reserve_next(self, seq: _Sequence) -> bool:
        """Hold blocks for every token fed so far; False if `seq` was preempted instead."""
        needed = math.ceil((seq.prompt_len + seq.emitted) / self.config.block_size)
        while len(seq.blocks) < needed:
            fresh = self.pool.allocate(1)
            if fresh is not None:
                seq.blocks.extend(fresh)
                continue
            victim = self._running[-1]
            self._preempt(victim)
            if victim is seq:
                return False
        self._update_gauges()
        return True

    def _preempt(self, seq: _Sequence) -> None:
        self._running.remove(seq)
        self.pool.release(seq.blocks)
        seq.blocks = []
        seq.registered = 0
        seq.running = False
        seq.prefill_pending = False
        seq.admitted = asyncio.get_running_loop().create_future()
        seq.queued_at = self._clock()
        # Front of the queue: a preempted request keeps its place ahead of newcomers.
        self._waiting.appendleft(seq)
        self.metrics.preemptions.inc()
        self._update_gauges()
        # No _schedule() here: the freed blocks are for the sequence that needed them.

    def _emit(self, seq: _Sequence) -> None:
        if seq.emitted == 0:
            self.metrics.prompt_tokens.inc(seq.prompt_len)
            self.metrics.ttft.observe(seq.model_s)
        else:
            self.metrics.itl.observe(seq.model_s - seq.last_token_s)
        seq.last_token_s = seq.model_s
        seq.prefill_pending = False
        seq.emitted += 1
        self.metrics.generation_tokens.inc()
        # The newest token is not in the cache until it is fed back in the next step.
        self._register_full_blocks(seq, seq.prompt_len + seq.emitted - 1)

    def _register_full_blocks(self, seq: _Sequence, computed_tokens: int) -> None:
        hashes = seq.hasher.hashes(computed_tokens)
        for index in range(seq.registered, min(len(hashes), len(seq.blocks))):
            self.pool.register(seq.blocks[index], hashes[index])
        seq.registered = max(seq.registered, min(len(hashes), len(seq.blocks)))

    def _drop(self, seq: _Sequence) -> None:
        if seq.running:
            self._running.remove(seq)
            seq.running = False
        elif seq in self._waiting:
            self._waiting.remove(seq)
        self.pool.release(seq.blocks)
        seq.blocks = []
        self._schedule()

    def _update_gauges(self) -> None:
        self.metrics.running.set(len(self._running))
        self.metrics.waiting.set(len(self._waiting))
        self.metrics.kv_usage.set(self.pool.usage)
