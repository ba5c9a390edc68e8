"""A langchain-core chat model backed by the pool, so a bot's pipeline is simply
`ChatPromptTemplate | PoolChatModel(...)`.

Token usage goes into `usage_metadata`; the serving endpoint, timings and attempts into
`response_metadata`. Async calls (`ainvoke`, `astream`) use langchain-core's executor
bridge over the synchronous pool, whose admission control and breakers are thread-safe
and shared by every caller in the process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.utils import convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk
from langchain_core.outputs import ChatResult as LCChatResult
from pydantic import ConfigDict, Field

from inference.pool import Pool
from inference.types import ChatRequest, ChatResult, Priority, RouteContext, TokenDelta


def _metadata(result: ChatResult) -> dict[str, Any]:
    return {
        "model_name": result.endpoint.model,
        "finish_reason": result.finish_reason,
        "endpoint": result.endpoint.name,
        "endpoint_url": result.endpoint.url,
        "ttft_ms": result.ttft_ms,
        "latency_ms": result.latency_ms,
        "queued_ms": result.queued_ms,
        "attempts": result.attempts,
        "token_usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        },
    }


def _usage(result: ChatResult) -> dict[str, int]:
    return {
        "input_tokens": result.prompt_tokens,
        "output_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


class PoolChatModel(BaseChatModel):
    """Chat completions from the vLLM pool, routed per conversation, tenant and priority."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    pool: Pool = Field(exclude=True)
    model: str = "Qwen/Qwen-7B-Chat"
    max_tokens: int = 512
    temperature: float = 0.7
    seed: int | None = None
    affinity_key: str = ""
    tenant: str = ""
    priority: Priority = Priority.CHAT
    strategy: str = ""  # a routing strategy name; "" uses the pool's default
    deadline_s: float | None = None
    # False asks for one JSON response instead of SSE (rarely useful: no TTFT, no tokens
    # until the end), kept for endpoints behind proxies that buffer streams.
    streaming: bool = True

    @property
    def _llm_type(self) -> str:
        return "switchboard-vllm-pool"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature}

    def _request(self, messages: list[BaseMessage], stop: list[str] | None) -> ChatRequest:
        wire = convert_to_openai_messages(messages)
        return ChatRequest(
            model=self.model,
            messages=[{"role": str(m["role"]), "content": str(m["content"])} for m in wire],
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            stop=tuple(stop or ()),
            seed=self.seed,
        )

    def _ctx(self) -> RouteContext:
        return RouteContext(
            affinity_key=self.affinity_key,
            tenant=self.tenant,
            priority=self.priority,
            strategy=self.strategy,
            deadline_s=self.deadline_s,
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LCChatResult:
        request = self._request(messages, stop)
        result: ChatResult | None = None
        for item in self.pool.run(request, self._ctx(), stream=self.streaming):
            if isinstance(item, TokenDelta):
                if run_manager is not None:
                    run_manager.on_llm_new_token(item.text)
            else:
                result = item
        assert result is not None  # the pool always ends with a result or raises
        message = AIMessage(
            content=result.text, response_metadata=_metadata(result), usage_metadata=_usage(result)
        )
        return LCChatResult(
            generations=[ChatGeneration(message=message)], llm_output=_metadata(result)
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for item in self.pool.stream(self._request(messages, stop), self._ctx()):
            if isinstance(item, TokenDelta):
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=item.text))
                if run_manager is not None:
                    run_manager.on_llm_new_token(item.text, chunk=chunk)
                yield chunk
            else:
                # The last chunk carries no text, only what the whole call cost.
                yield ChatGenerationChunk(
                    message=AIMessageChunk(
                        content="",
                        response_metadata=_metadata(item),
                        usage_metadata=_usage(item),  # type: ignore[arg-type]
                        chunk_position="last",
                    )
                )
