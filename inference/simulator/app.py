"""A Starlette app that imitates vLLM's OpenAI-compatible server closely enough for
integration tests, local development and load experiments without a GPU.

Replies are deterministic and plainly marked as simulated. Status codes, error bodies,
SSE framing and metric names mirror vLLM so that client code exercised here behaves the
same against the real thing. Timing comes from the model in `inference.simulator.engine`,
failures on demand from `inference.simulator.faults`.

Besides vLLM's routes the app has one simulator-only route, ``/_sim/faults``: GET returns
the current fault settings, POST a JSON object with any of them changes them at run time.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from inference.simulator.config import SimulatorConfig
from inference.simulator.engine import Engine
from inference.simulator.faults import FaultInjector, FaultPlan, FaultSettingsError
from inference.simulator.metrics import SimulatorMetrics
from inference.simulator.protocol import (
    CHARS_PER_TOKEN_BOUND,
    RequestError,
    bad_request,
    characters_error,
    context_error,
    parse_chat,
    parse_tokenize,
    sse,
)
from inference.simulator.reply import ReplyOutput, cut_reply, natural_reply
from inference.simulator.responses import BrokenResponse, HangResponse, SimulatedCrash
from inference.simulator.tokens import encode, render_chatml, tokenize

VERSION = "0.0.0-switchboard-simulator"

__all__ = ["VERSION", "SimulatorConfig", "create_app"]


@dataclass(frozen=True)
class _Generation:
    """A validated request, with its whole (deterministic) output decided up front."""

    request_id: str
    created: int
    prompt_ids: tuple[int, ...]
    output: ReplyOutput
    include_usage: bool
    faults: FaultPlan

    def usage(self) -> dict[str, Any]:
        prompt = len(self.prompt_ids)
        completion = len(self.output.pieces)
        return {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
            "prompt_tokens_details": None,
        }

    @property
    def die_at(self) -> int | None:
        """How many tokens go out before an injected crash, if one is planned."""
        after = self.faults.die_after_tokens
        if after is None:
            return None
        return min(after, len(self.output.pieces) - 1)


async def _client_gone(request: Request) -> None:
    # The body has been read, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _Simulator:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.metrics = SimulatorMetrics(config.model)
        self.engine = Engine(config.engine, self.metrics)
        self.faults = FaultInjector(config.faults, config.seed)
        self.started = int(time.time())

    # -- plain endpoints ------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def version(self, request: Request) -> JSONResponse:
        return JSONResponse({"version": VERSION})

    async def models(self, request: Request) -> JSONResponse:
        model = self.config.model
        permission = {
            "id": f"modelperm-{uuid.uuid4().hex}",
            "object": "model_permission",
            "created": self.started,
            "allow_create_engine": False,
            "allow_sampling": True,
            "allow_logprobs": True,
            "allow_search_indices": False,
            "allow_view": True,
            "allow_fine_tuning": False,
            "organization": "*",
            "group": None,
            "is_blocking": False,
        }
        card = {
            "id": model,
            "object": "model",
            "created": self.started,
            "owned_by": "vllm",
            "root": model,
            "parent": None,
            "max_model_len": self.config.max_model_len,
            "permission": [permission],
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def tokenize_endpoint(self, request: Request) -> Response:
        try:
            params = parse_tokenize(await _json_body(request), self.config)
        except RequestError as exc:
            return exc.response()
        if params.messages is not None:
            text = render_chatml(
                params.messages, add_generation_prompt=params.add_generation_prompt
            )
        else:
            text = params.prompt or ""
        pieces = tokenize(text)
        return JSONResponse(
            {
                "count": len(pieces),
                "max_model_len": self.config.max_model_len,
                "tokens": encode(pieces),
                "token_strs": pieces if params.return_token_strs else None,
            }
        )

    async def faults_endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = await _json_body(request)
                if not isinstance(changes, dict):
                    raise bad_request("fault settings must be a JSON object")
                self.faults.update(changes)
            except RequestError as exc:
                return exc.response()
            except FaultSettingsError as exc:
                return bad_request(str(exc), exc.param).response()
        return JSONResponse(self.faults.settings.as_dict())

    # -- chat completions -----------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        try:
            generation, stream = self._plan(await _json_body(request))
        except RequestError as exc:
            return exc.response()
        plan = generation.faults
        if plan.error:
            return RequestError(
                503,
                "ServiceUnavailableError",
                "simulated fault: the engine failed this request; retrying may succeed",
                None,
            ).response()
        if plan.hang:
            return HangResponse()
        if stream:
            return StreamingResponse(self._stream(generation), media_type="text/event-stream")
        return await self._complete(request, generation)

    def _plan(self, body: Any) -> tuple[_Generation, bool]:
        cfg = self.config
        params = parse_chat(body, cfg)
        rendered = render_chatml(params.messages)
        if len(rendered) > CHARS_PER_TOKEN_BOUND * cfg.max_model_len:
            raise characters_error(len(rendered), cfg.max_model_len)
        prompt_pieces = tokenize(rendered)
        if len(prompt_pieces) >= cfg.max_model_len:
            raise context_error(len(prompt_pieces), cfg.max_model_len)
        # Whatever room the prompt leaves is a hard cap: running out of context is a
        # "length" finish, not an error.
        limit = cfg.max_model_len - len(prompt_pieces)
        if params.max_tokens is not None:
            limit = min(limit, params.max_tokens)
        natural = natural_reply(
            cfg.model,
            cfg.name,
            params.messages,
            seed=cfg.seed if params.seed is None else params.seed,
            temperature=params.temperature,
            min_tokens=cfg.reply_min_tokens,
            max_tokens=cfg.reply_max_tokens,
        )
        generation = _Generation(
            request_id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            prompt_ids=tuple(encode(prompt_pieces)),
            output=cut_reply(natural, limit, params.stop),
            include_usage=params.include_usage,
            # Drawn only for valid requests, so bad input never shifts the fault sequence.
            faults=self.faults.draw(),
        )
        return generation, params.stream

    def _tokens(self, gen: _Generation) -> AsyncGenerator[int, None]:
        return self.engine.generate(
            gen.prompt_ids,
            encode(gen.output.pieces),
            finish_reason=gen.output.finish_reason,
            spike_ms=gen.faults.spike_ms,
        )

    async def _complete(self, request: Request, gen: _Generation) -> Response:
        async def run() -> bool:
            async with aclosing(self._tokens(gen)) as tokens:
                async for index in tokens:
                    # Leaving early closes the generator, so no success is recorded.
                    if gen.die_at is not None and index + 1 >= max(1, gen.die_at):
                        return False
            return True

        work = asyncio.ensure_future(run())
        gone = asyncio.ensure_future(_client_gone(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()
            # Gathered, not awaited one by one, so our own cancellation is never swallowed.
            await asyncio.gather(work, gone, return_exceptions=True)
        if work.cancelled():
            # Nobody is listening any more; cancelling `work` already freed the engine.
            return Response(status_code=499)
        message = {"role": "assistant", "content": gen.output.text, "tool_calls": []}
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": gen.output.finish_reason,
            "stop_reason": gen.output.stop_reason,
        }
        body = {
            "id": gen.request_id,
            "object": "chat.completion",
            "created": gen.created,
            "model": self.config.model,
            "choices": [choice],
            "usage": gen.usage(),
        }
        if not work.result():
            return BrokenResponse(json.dumps(body).encode())
        return JSONResponse(body)

    async def _stream(self, gen: _Generation) -> AsyncIterator[str]:
        base = {
            "id": gen.request_id,
            "object": "chat.completion.chunk",
            "created": gen.created,
            "model": self.config.model,
        }

        def chunk(delta: dict[str, str], finish_reason: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return sse({**base, "choices": [choice]})

        async with aclosing(self._tokens(gen)) as tokens:
            async for index in tokens:
                if index == 0:
                    # vLLM sends the role once prefill is done, just ahead of the first token.
                    yield chunk({"role": "assistant", "content": ""})
                if index == gen.die_at:
                    raise SimulatedCrash("simulated fault: worker died mid-stream")
                delta = gen.output.deltas[index]
                if delta:  # the part of a token that began a stop string is never shown
                    yield chunk({"content": delta})
        yield chunk({"content": ""}, gen.output.finish_reason)
        if gen.include_usage:
            yield sse({**base, "choices": [], "usage": gen.usage()})
        yield sse("[DONE]")


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise bad_request("request body is not valid JSON") from None


def create_app(config: SimulatorConfig) -> Starlette:
    sim = _Simulator(config)
    routes = [
        Route("/health", sim.health, methods=["GET"]),
        Route("/version", sim.version, methods=["GET"]),
        Route("/v1/models", sim.models, methods=["GET"]),
        Route("/metrics", sim.metrics_endpoint, methods=["GET"]),
        Route("/tokenize", sim.tokenize_endpoint, methods=["POST"]),
        Route("/v1/chat/completions", sim.chat, methods=["POST"]),
        Route("/_sim/faults", sim.faults_endpoint, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes)
    # Exposed for in-process tests and embedding; each app owns its own registry and engine.
    app.state.simulator_config = config
    app.state.metrics_registry = sim.metrics.registry
    app.state.engine = sim.engine
    app.state.faults = sim.faults
    return app
