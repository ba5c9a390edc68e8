"""A Starlette app that imitates vLLM's OpenAI-compatible server closely enough for
integration tests, local development and load experiments without a GPU.

Replies are deterministic and plainly marked as simulated. Status codes, error bodies,
SSE framing and metric names mirror vLLM so that client code exercised here behaves the
same against the real thing.
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

from inference.simulator.metrics import SimulatorMetrics
from inference.simulator.tokens import count_prompt_tokens, simulated_reply, tokenize

VERSION = "0.0.0-switchboard-simulator"


@dataclass(frozen=True)
class SimulatorConfig:
    model: str = "Qwen/Qwen-7B-Chat"
    max_model_len: int = 8192
    ttft_ms: float = 20.0
    token_ms: float = 5.0
    name: str = "sim-1"


@dataclass(frozen=True)
class _Generation:
    """A validated request, with its whole (deterministic) output decided up front."""

    request_id: str
    created: int
    pieces: tuple[str, ...]
    finish_reason: str
    prompt_tokens: int
    include_usage: bool

    def usage(self) -> dict[str, Any]:
        completion = len(self.pieces)
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + completion,
            "completion_tokens": completion,
            "prompt_tokens_details": None,
        }


class _RequestError(Exception):
    def __init__(self, status: int, err_type: str, message: str, param: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.err_type = err_type
        self.message = message
        self.param = param

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.err_type,
                "param": self.param,
                "code": self.status,
            }
        }
        return JSONResponse(body, status_code=self.status)


def _bad_request(message: str, param: str | None = None) -> _RequestError:
    return _RequestError(400, "BadRequestError", message, param)


def _sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def _normalise_messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise _bad_request("'messages' must be a non-empty list", "messages")
    messages: list[dict[str, str]] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            raise _bad_request("each message needs a string 'role'", "messages")
        content = item.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            # OpenAI content parts; only text parts mean anything to a text-only model.
            text = "".join(
                str(part.get("text", ""))
                for part in content
                if isinstance(part, dict) and part.get("type") == "text"
            )
        else:
            raise _bad_request("message 'content' must be a string or a list", "messages")
        messages.append({"role": item["role"], "content": text})
    return messages


class _Simulator:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.metrics = SimulatorMetrics(config.model, config.max_model_len)
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

    # -- chat completions -----------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _bad_request("request body is not valid JSON").response()
        try:
            generation, stream = self._plan(body)
        except _RequestError as exc:
            return exc.response()
        if stream:
            return StreamingResponse(self._stream(generation), media_type="text/event-stream")
        pieces: list[str] = []
        async with aclosing(self._generate(generation)) as tokens:
            async for piece in tokens:
                pieces.append(piece)
        message = {"role": "assistant", "content": "".join(pieces), "tool_calls": []}
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": generation.finish_reason,
            "stop_reason": None,
        }
        return JSONResponse(
            {
                "id": generation.request_id,
                "object": "chat.completion",
                "created": generation.created,
                "model": self.config.model,
                "choices": [choice],
                "usage": generation.usage(),
            }
        )

    def _plan(self, body: Any) -> tuple[_Generation, bool]:
        """Validate like vLLM does, in the same order, and decide the output."""
        cfg = self.config
        if not isinstance(body, dict):
            raise _bad_request("request body must be a JSON object")
        # vLLM falls back to the served model when the field is omitted.
        model = body.get("model", cfg.model)
        if model != cfg.model:
            raise _RequestError(
                404, "NotFoundError", f"The model `{model}` does not exist.", "model"
            )
        messages = _normalise_messages(body.get("messages"))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None:
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
                raise _bad_request("'max_tokens' must be a positive integer")
            if max_tokens > cfg.max_model_len:
                raise _bad_request(
                    f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. "
                    f"This model's maximum context length is {cfg.max_model_len} tokens.",
                    "max_tokens",
                )
        temperature = body.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise _bad_request("'temperature' must be a number", "temperature")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise _bad_request("'stream' must be a boolean", "stream")
        options = body.get("stream_options") or {}
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))

        prompt_tokens = count_prompt_tokens(messages)
        if prompt_tokens >= cfg.max_model_len:
            raise _bad_request(
                f"This model's maximum context length is {cfg.max_model_len} tokens. "
                f"However, your request has {prompt_tokens} input tokens. "
                "Please reduce the length of the input messages.",
                "input_tokens",
            )
        # Whatever room the prompt leaves is a hard cap: running out of context is a
        # "length" finish, not an error.
        limit = cfg.max_model_len - prompt_tokens
        if max_tokens is not None:
            limit = min(limit, max_tokens)
        pieces = tokenize(simulated_reply(cfg.model, cfg.name, messages))
        finish_reason = "length" if len(pieces) > limit else "stop"
        generation = _Generation(
            request_id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            pieces=tuple(pieces[:limit]),
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            include_usage=include_usage,
        )
        return generation, stream

    async def _generate(self, gen: _Generation) -> AsyncGenerator[str, None]:
        """Yield output pieces at the configured pace while keeping metrics honest.

        Both response styles consume this one generator, which is what guarantees that
        streamed pieces join up to exactly the non-streamed text.
        """
        metrics = self.metrics
        started = time.perf_counter()
        metrics.running.inc()
        held = gen.prompt_tokens
        metrics.hold_kv(held)
        try:
            await asyncio.sleep(self.config.ttft_ms / 1000.0)
            metrics.prompt_tokens.inc(gen.prompt_tokens)
            metrics.ttft.observe(time.perf_counter() - started)
            for index, piece in enumerate(gen.pieces):
                if index:
                    await asyncio.sleep(self.config.token_ms / 1000.0)
                metrics.generation_tokens.inc()
                metrics.hold_kv(1)
                held += 1
                yield piece
            metrics.success(gen.finish_reason)
            metrics.e2e.observe(time.perf_counter() - started)
        finally:
            # Runs on client disconnect too, so the running gauge never leaks.
            metrics.running.dec()
            metrics.hold_kv(-held)

    async def _stream(self, gen: _Generation) -> AsyncIterator[str]:
        base = {
            "id": gen.request_id,
            "object": "chat.completion.chunk",
            "created": gen.created,
            "model": self.config.model,
        }

        def chunk(delta: dict[str, str], finish_reason: str | None = None) -> str:
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            if finish_reason is not None:
                choice["stop_reason"] = None
            return _sse({**base, "choices": [choice]})

        first = True
        async with aclosing(self._generate(gen)) as tokens:
            async for piece in tokens:
                if first:
                    # vLLM sends the role once prefill is done, just ahead of the first token.
                    yield chunk({"role": "assistant", "content": ""})
                    first = False
                yield chunk({"content": piece})
        if first:
            yield chunk({"role": "assistant", "content": ""})
        yield chunk({"content": ""}, gen.finish_reason)
        if gen.include_usage:
            yield _sse({**base, "choices": [], "usage": gen.usage()})
        yield _sse("[DONE]")


def create_app(config: SimulatorConfig) -> Starlette:
    sim = _Simulator(config)
    routes = [
        Route("/health", sim.health, methods=["GET"]),
        Route("/version", sim.version, methods=["GET"]),
        Route("/v1/models", sim.models, methods=["GET"]),
        Route("/metrics", sim.metrics_endpoint, methods=["GET"]),
        Route("/v1/chat/completions", sim.chat, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    # Exposed for in-process tests and embedding; each app owns its own registry.
    app.state.simulator_config = config
    app.state.metrics_registry = sim.metrics.registry
    return app
