"""Request parsing and validation with vLLM's status codes, error bodies and checks.

Checks run in vLLM's order so that a request with several problems gets the same error
from the simulator as from the real server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from inference.simulator.config import SimulatorConfig


class RequestError(Exception):
    """An error answered with vLLM's JSON error body."""

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


def bad_request(message: str, param: str | None = None) -> RequestError:
    return RequestError(400, "BadRequestError", message, param)


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


@dataclass(frozen=True)
class ChatParams:
    messages: list[dict[str, str]]
    max_tokens: int | None
    temperature: float
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def check_model(body: dict[str, Any], config: SimulatorConfig) -> None:
    # vLLM falls back to the served model when the field is omitted.
    model = body.get("model", config.model)
    if model != config.model:
        raise RequestError(404, "NotFoundError", f"The model `{model}` does not exist.", "model")


def normalise_messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty list", "messages")
    messages: list[dict[str, str]] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            raise bad_request("each message needs a string 'role'", "messages")
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
            raise bad_request("message 'content' must be a string or a list", "messages")
        messages.append({"role": item["role"], "content": text})
    return messages


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _stop_strings(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise bad_request("'stop' must be a string or a list of strings", "stop")
    # An empty stop string would end every reply before it began; vLLM ignores it too.
    return tuple(s for s in raw if s)


def parse_chat(body: Any, config: SimulatorConfig) -> ChatParams:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    check_model(body, config)
    messages = normalise_messages(body.get("messages"))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if not _is_int(max_tokens) or max_tokens < 1:
            raise bad_request("'max_tokens' must be a positive integer", "max_tokens")
        if max_tokens > config.max_model_len:
            raise bad_request(
                f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. "
                f"This model's maximum context length is {config.max_model_len} tokens.",
                "max_tokens",
            )
    temperature = body.get("temperature")
    if temperature is None:
        temperature = 1.0  # OpenAI's and vLLM's default when the field is absent or null
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise bad_request("'temperature' must be a number", "temperature")
    if not temperature >= 0:
        raise bad_request(f"temperature must be non-negative, got {temperature}.", "temperature")
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise bad_request("'seed' must be an integer", "seed")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not _is_int(n) or n != 1:
        # vLLM can sample several choices; the simulator deliberately supports one only,
        # and says so rather than answering with fewer choices than asked for.
        raise bad_request(f"the simulator supports only n=1, got n={n!r}", "n")
    stop = _stop_strings(body.get("stop"))
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "stream")
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    return ChatParams(
        messages=messages,
        max_tokens=max_tokens,
        temperature=float(temperature),
        seed=seed,
        stop=stop,
        stream=stream,
        include_usage=include_usage,
    )


# vLLM refuses a prompt by its length in characters before tokenising it, assuming no
# token is longer than this many characters.
CHARS_PER_TOKEN_BOUND = 13


def characters_error(characters: int, max_model_len: int) -> RequestError:
    return bad_request(
        f"This model's maximum context length is {max_model_len} tokens. "
        f"However, your request has {characters} characters, which is more than "
        f"{CHARS_PER_TOKEN_BOUND} characters per token can fit. "
        "Please reduce the length of the input messages.",
        "input_text",
    )


def context_error(prompt_tokens: int, max_model_len: int) -> RequestError:
    return bad_request(
        f"This model's maximum context length is {max_model_len} tokens. "
        f"However, your request has {prompt_tokens} input tokens. "
        "Please reduce the length of the input messages.",
        "input_tokens",
    )


@dataclass(frozen=True)
class TokenizeParams:
    prompt: str | None
    messages: list[dict[str, str]] | None
    add_generation_prompt: bool
    return_token_strs: bool


def parse_tokenize(body: Any, config: SimulatorConfig) -> TokenizeParams:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    check_model(body, config)
    flags: dict[str, bool] = {}
    for name, default in (("add_generation_prompt", True), ("return_token_strs", False)):
        value = body.get(name, default)
        if not isinstance(value, bool):
            raise bad_request(f"'{name}' must be a boolean", name)
        flags[name] = value
    if "messages" in body:
        return TokenizeParams(None, normalise_messages(body["messages"]), **flags)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise bad_request("either a string 'prompt' or 'messages' is required", "prompt")
    return TokenizeParams(prompt, None, **flags)
