"""The simulator's performance model: a step-based continuous-batching engine with a paged
KV cache, scheduled the way vLLM v1's scheduler does it (chunked prefill always on).

Defaults describe roughly a 7B model on one data-centre GPU (an A100/H100-class card).
One asyncio task runs *engine steps* back to back while any request is running or
waiting, and stops when there is none. Each step is planned, takes its modelled time,
then its results are applied:

1. **Running sequences first.** Every running sequence, in admission order, is given
   tokens from the step's budget of `max_num_batched_tokens` (default 8192, as vLLM): a
   sequence in decode takes 1 token; one still in prefill takes a *chunk* of its
   remaining uncomputed prompt tokens, as many as the budget has left (chunked prefill).
   Scheduling stops when the budget is spent.
2. **KV blocks and preemption.** The KV cache has `kv_blocks` (default 2000) blocks of
   `block_size` (default 16) tokens, see `inference.simulator.kvcache`. A scheduled
   sequence must hold blocks for every token computed up to the end of its chunk. When
   none is free, the most recently admitted running sequence is preempted (possibly the
   one asking, which then ends this step's running pass), as vLLM does: its blocks are
   released (they stay cached until evicted), it goes back to the *front* of the queue,
   and on readmission it recomputes prompt plus generated tokens as a prefill, usually
   mostly from the prefix cache. ``vllm:num_preemptions_total`` counts these. The
   configuration is rejected unless the cache holds one `max_model_len` sequence.
3. **Admission.** If nothing was preempted, waiting requests are admitted FIFO
   (``vllm:num_requests_waiting``) while fewer than `max_num_seqs` (default 256) run,
   budget is left and the head's first chunk fits in the free blocks; the head blocks
   everyone behind it. On admission the prompt's full blocks are looked up by chained
   block hash and the longest cached run is reused; as in vLLM the last prompt token is
   always recomputed, so a hit covers at most the full blocks within the first
   ``len - 1`` tokens. ``vllm:prefix_cache_queries_total`` counts the tokens looked up and
   ``vllm:prefix_cache_hits_total`` the tokens found. Only uncached tokens are prefilled.
4. **Step time.** ``step_base_ms + prefill_ms_per_token * prefill_tokens +
   decode_ms_per_seq * decode_seqs`` (defaults 10 ms, 0.05 ms and 0.1 ms): ~10 ms per
   decode step alone (~100 tokens/s), ~36 ms with 256 decoding sequences, ~20k prefill
   tokens/s. So everybody sharing a step waits for it: another request's long prefill
   slows every decoding sequence's next token, and cached prefixes shrink prefill work.
5. **End of step.** A sequence whose prefill completed emits its first token (TTFT);
   decoding sequences emit their next token; a sequence holds blocks for every computed
   token and full blocks (prompt or generated) are registered in the prefix cache.
   Finished sequences free their slots and blocks at once.

An injected latency spike holds a sequence, with its slot and blocks, between the end of
its prefill and its first token, without stalling anybody else's steps.

**Time.** Every step's modelled time is multiplied by `time_scale` (default 1.0) before
it is slept, so tests and benchmarks can run the same model faster. The engine keeps a
*modelled* clock that advances by each step's time; latency histograms record modelled
seconds from it. A request that arrives while the engine is idle is admitted at once
(queue time exactly 0); one arriving mid-step is placed in that step by the wall time
elapsed divided by `time_scale` (at the step's start when `time_scale` is 0). A request
served alone therefore reports a TTFT of exactly
``step_base_ms + prefill_ms_per_token * uncached`` when its prompt fits one step.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    max_num_batched_tokens: int = 8192
    step_base_ms: float = 10.0
    prefill_ms_per_token: float = 0.05
    decode_ms_per_seq: float = 0.1
    time_scale: float = 1.0

    def check(self, max_model_len: int) -> None:
        """Raise ValueError for settings the model cannot run with."""
        for name in ("max_num_seqs", "kv_blocks", "block_size", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("step_base_ms", "prefill_ms_per_token", "decode_ms_per_seq", "time_scale"):
            if not getattr(self, name) >= 0:  # also rejects NaN
                raise ValueError(f"{name} must be >= 0")
        if self.kv_blocks * self.block_size < max_model_len:
            # vLLM refuses to start for the same reason: one full-length sequence must fit,
            # or preemption could never let it finish.
            raise ValueError(
                f"kv_blocks * block_size ({self.kv_blocks * self.block_size} tokens) must "
                f"hold at least max_model_len ({max_model_len}) tokens"
            )

    def step_ms(self, prefill_tokens: int, decode_seqs: int) -> float:
        return (
            self.step_base_ms
            + self.prefill_ms_per_token * prefill_tokens
            + self.decode_ms_per_seq * decode_seqs
        )


@dataclass(eq=False)
class _Sequence:
    prompt_len: int
    output_len: int
    hasher: BlockHasher
    spike_s: float
    arrived_s: float  # modelled clock
    queued_s: float  # modelled clock when it last joined the queue
    blocks: list[int] = field(default_factory=list)
    registered: int = 0  # leading blocks already offered to the prefix cache
    computed: int = 0  # tokens whose KV has been computed
    emitted: int = 0
    running: bool = False
    finished: bool = False
    ever_admitted: bool = False
    hold_until: float | None = None  # modelled time a spiked first token is released
    token_s: list[float] = field(default_factory=list)  # modelled time of each token
    signal: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def total(self) -> int:
        """Tokens the model has to have seen to produce the next token."""
        return self.prompt_len + self.emitted


class Engine:
    """Runs engine steps over simulated sequences, batch slots and KV blocks."""

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
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.now_s = 0.0  # the modelled clock
        self.steps = 0  # engine steps run so far
        self._preemptions = 0
        # (modelled start, modelled length, wall start) of the wait in progress, if any
        self._in_flight: tuple[float, float, float] | None = None

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

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
        now = self._arrival_s()
        seq = _Sequence(
            prompt_len=len(prompt_ids),
            output_len=len(output_ids),
            hasher=BlockHasher([*prompt_ids, *output_ids], self.config.block_size),
            spike_s=spike_ms / 1000.0,
            arrived_s=now,
            queued_s=now,
        )
        if seq.output_len > 0:
            self._waiting.append(seq)
            self._update_gauges()
            self._start()
        try:
            yielded = 0
            while yielded < seq.output_len:
                if yielded < seq.emitted:
                    yield yielded
                    yielded += 1
                    continue
                self._raise_if_failed()
                seq.signal.clear()
                await seq.signal.wait()
            self.metrics.success(finish_reason)
            if seq.token_s:
                self.metrics.e2e.observe(seq.token_s[-1] - seq.arrived_s)
        finally:
            self._drop(seq)

    # -- the engine loop ------------------------------------------------------------------

    def _start(self) -> None:
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def _raise_if_failed(self) -> None:
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception():
            raise RuntimeError("the simulated engine loop failed") from task.exception()

    def _arrival_s(self) -> float:
        """The modelled time now: inside the step (or wait) in progress, if there is one."""
        if self._in_flight is None:
            return self.now_s
        start, length, wall = self._in_flight
        scale = self.config.time_scale
        if scale == 0:
            return start
        return min(start + length, start + max(0.0, self._clock() - wall) / scale)

    async def _loop(self) -> None:
        try:
            idle_plans = 0
            while self._running or self._waiting:
                self._wake.clear()
                scheduled = self._plan()
                if scheduled:
                    idle_plans = 0
                    await self._step(scheduled)
                elif any(s.hold_until is not None for s in self._running):
                    await self._wait_for_holds()
                else:
                    # Only a sequence that preempted itself: it is readmitted next time.
                    idle_plans += 1
                    if idle_plans > 2:
                        raise RuntimeError("engine stalled with work but nothing to schedule")
                    await asyncio.sleep(0)
                self._release_holds()
        finally:
            self._in_flight = None
            for seq in [*self._running, *self._waiting]:
                seq.signal.set()  # wakes anyone waiting if the loop died

    async def _step(self, scheduled: list[tuple[_Sequence, int]]) -> None:
        prefill = decode = 0
        for seq, tokens in scheduled:
            if seq.emitted > 0 and seq.total - seq.computed == 1:
                decode += 1
            else:
                prefill += tokens
        length = self.config.step_ms(prefill, decode) / 1000.0
        self._in_flight = (self.now_s, length, self._clock())
        try:
            await self._sleep(length * self.config.time_scale)
        finally:
            self._in_flight = None
        self.now_s += length
        self.steps += 1
        for seq, tokens in scheduled:
            if not seq.running:
                continue  # dropped by its client mid-step
            seq.computed += tokens
            self._register_full_blocks(seq)
            if seq.computed < seq.total:
                continue  # more prefill chunks to go
            if seq.emitted == 0 and seq.spike_s > 0:
                seq.hold_until = self.now_s + seq.spike_s
                seq.spike_s = 0.0  # charged once, even if preempted later
                continue
            self._emit(seq)
        self._update_gauges()

    async def _wait_for_holds(self) -> None:
        """Nothing to compute: let modelled time pass until a held token is due."""
        due = [s.hold_until for s in self._running if s.hold_until is not None]
        length = max(0.0, min(due) - self.now_s)
        self._in_flight = (self.now_s, length, self._clock())
        sleeper = asyncio.ensure_future(self._sleep(length * self.config.time_scale))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
            # A new arrival ends the wait early, at the modelled time it arrived.
            self.now_s = self.now_s + length if sleeper.done() else self._arrival_s()
        finally:
            self._in_flight = None
            for task in (sleeper, woken):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _release_holds(self) -> None:
        for seq in list(self._running):
            if seq.hold_until is not None and seq.hold_until <= self.now_s + 1e-12:
                seq.hold_until = None
                self._emit(seq)
        self._update_gauges()

    # -- scheduling -----------------------------------------------------------------------

    def _plan(self) -> list[tuple[_Sequence, int]]:
        """Pick this step's sequences and token counts, as vLLM v1's scheduler does."""
        cfg = self.config
        budget = cfg.max_num_batched_tokens
        scheduled: list[tuple[_Sequence, int]] = []
        preemptions = self._preemptions
        index = 0
        while index < len(self._running) and budget > 0:
            seq = self._running[index]
            index += 1
            if seq.hold_until is not None:
                continue
            tokens = min(seq.total - seq.computed, budget)
            # Victims come from the end of the list, so none of them is scheduled yet.
            if not self._reserve(seq, seq.computed + tokens):
                break  # preempted itself to make room
            scheduled.append((seq, tokens))
            budget -= tokens
        if self._preemptions == preemptions:
            self._admit(scheduled, budget)  # vLLM admits nobody in a step that preempted
        self._update_gauges()
        return scheduled

    def _admit(self, scheduled: list[tuple[_Sequence, int]], budget: int) -> int:
        cfg = self.config
        while self._waiting and len(self._running) < cfg.max_num_seqs and budget > 0:
            seq = self._waiting[0]
            total = seq.total
            # The last token is always recomputed, so only blocks before it can hit.
            hits = self.pool.lookup(seq.hasher.hashes(total - 1))
            computed = len(hits) * cfg.block_size
            tokens = min(total - computed, budget)
            needed = math.ceil((computed + tokens) / cfg.block_size) - len(hits)
            if not self.pool.can_take(hits, needed):
                break
            self._waiting.popleft()
            seq.blocks = self.pool.take(hits, needed)
            seq.registered = len(hits)
            seq.computed = computed
            self.metrics.prefix_queries.inc(total)
            self.metrics.prefix_hits.inc(computed)
            seq.running = True
            if not seq.ever_admitted:
                seq.ever_admitted = True
                self.metrics.queue_time.observe(self.now_s - seq.queued_s)
            self._running.append(seq)
            scheduled.append((seq, tokens))
            budget -= tokens
        return budget

    def _reserve(self, seq: _Sequence, tokens: int) -> bool:
        """Hold blocks for `tokens` tokens of `seq`; False if `seq` was preempted instead."""
        needed = math.ceil(tokens / self.config.block_size)
        while len(seq.blocks) < needed:
            fresh = self.pool.allocate(needed - len(seq.blocks))
            if fresh is not None:
                seq.blocks.extend(fresh)
                break
            victim = self._running[-1]
            self._preempt(victim)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: _Sequence) -> None:
        self._running.remove(seq)
        self.pool.release(seq.blocks)
        seq.blocks = []
        seq.registered = 0
        seq.computed = 0
        seq.running = False
        seq.queued_s = self.now_s
        seq.hold_until = None
        self._preemptions += 1
        # Front of the queue: a preempted request keeps its place ahead of newcomers.
        self._waiting.appendleft(seq)
        self.metrics.preemptions.inc()

    def _emit(self, seq: _Sequence) -> None:
        elapsed = self.now_s - seq.arrived_s
        if seq.emitted == 0:
            self.metrics.prompt_tokens.inc(seq.prompt_len)
            self.metrics.ttft.observe(elapsed)
        else:
            self.metrics.itl.observe(self.now_s - seq.token_s[-1])
        seq.token_s.append(self.now_s)
        seq.emitted += 1
        self.metrics.generation_tokens.inc()
        seq.signal.set()
        if seq.emitted >= seq.output_len:
            seq.finished = True
            self._free(seq)

    def _register_full_blocks(self, seq: _Sequence) -> None:
        hashes = seq.hasher.hashes(seq.computed)
        upto = min(len(hashes), len(seq.blocks))
        for index in range(seq.registered, upto):
            self.pool.register(seq.blocks[index], hashes[index])
        seq.registered = max(seq.registered, upto)

    def _free(self, seq: _Sequence) -> None:
        if seq.running:
            self._running.remove(seq)
            seq.running = False
        elif seq in self._waiting:
            self._waiting.remove(seq)
        self.pool.release(seq.blocks)
        seq.blocks = []
        seq.hold_until = None

    def _drop(self, seq: _Sequence) -> None:
        self._free(seq)
        self._update_gauges()

    def _update_gauges(self) -> None:
        self.metrics.running.set(len(self._running))
        self.metrics.waiting.set(len(self._waiting))
        self.metrics.kv_usage.set(self.pool.usage)
