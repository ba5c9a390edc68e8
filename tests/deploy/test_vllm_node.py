"""What a vLLM pool node is given: the ChatML template rendered as vLLM renders chat
templates, Qwen's stop tokens, and docker/vllm-node.sh's command line."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tests.deploy import support

TEMPLATE = support.DOCKER / "vllm" / "qwen-chatml.jinja"
GENERATION_CONFIG = support.DOCKER / "vllm" / "qwen-7b-chat" / "generation_config.json"


def _environments() -> list[jinja2.Environment]:
    # transformers (and so vLLM) render chat templates in a sandbox with trim_blocks and
    # lstrip_blocks; the template must not depend on them either way.
    return [
        ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True),
        jinja2.Environment(autoescape=False),  # noqa: S701 (prompt text, not HTML)
    ]


def _render(env: jinja2.Environment, messages: list[dict[str, Any]], **extra: Any) -> str:
    return env.from_string(TEMPLATE.read_text()).render(messages=messages, **extra)


@pytest.mark.parametrize("env", _environments(), ids=["hf-sandbox", "plain"])
def test_renders_a_conversation_in_qwen_chatml(env: jinja2.Environment) -> None:
    messages = [
        {"role": "system", "content": "You are Acme's helper."},
        {"role": "user", "content": "Hi!\nTwo lines."},
        {"role": "assistant", "content": "Hello. 你好"},
        {"role": "user", "content": "Order status?"},
    ]
    assert _render(env, messages, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are Acme's helper.<|im_end|>\n"
        "<|im_start|>user\nHi!\nTwo lines.<|im_end|>\n"
        "<|im_start|>assistant\nHello. 你好<|im_end|>\n"
        "<|im_start|>user\nOrder status?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("env", _environments(), ids=["hf-sandbox", "plain"])
def test_without_generation_prompt_the_last_turn_is_closed(
    env: jinja2.Environment,
) -> None:
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
    ]
    assert _render(env, messages, add_generation_prompt=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        "<|im_start|>assistant\nA<|im_end|>\n"
    )


@pytest.mark.parametrize("env", _environments(), ids=["hf-sandbox", "plain"])
def test_no_system_message_gets_qwens_default_one(env: jinja2.Environment) -> None:
    rendered = _render(env, [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_an_assistant_turn_without_content_renders_empty() -> None:
    env = _environments()[0]
    rendered = _render(
        env,
        [{"role": "system", "content": "S"}, {"role": "assistant", "content": None}],
        add_generation_prompt=False,
    )
    assert rendered.endswith("<|im_start|>assistant\n<|im_end|>\n")


def test_generation_config_stops_at_both_qwen_end_tokens() -> None:
    config = json.loads(GENERATION_CONFIG.read_text())
    assert sorted(config["eos_token_id"]) == [151643, 151645]
    # vLLM turns max_new_tokens into a server-wide cap on every request's max_tokens.
    assert "max_new_tokens" not in config


def test_vllm_node_defaults_are_qwen_7b_chat() -> None:
    argv = support.vllm_node_print({})
    assert argv[:3] == ["vllm", "serve", "Qwen/Qwen-7B-Chat"]
    assert "--trust-remote-code" in argv
    assert argv[argv.index("--chat-template") + 1] == str(TEMPLATE)
    assert argv[argv.index("--generation-config") + 1] == str(GENERATION_CONFIG.parent)
    assert argv[argv.index("--max-model-len") + 1] == "8192"


def test_vllm_node_reads_the_compose_variables() -> None:
    argv = support.vllm_node_print(
        {
            "MODEL": "Qwen/Qwen2.5-7B-Instruct",
            "CHAT_TEMPLATE": "",
            "GENERATION_CONFIG": "",
            "VLLM_PORT": "8101",
            "MAX_MODEL_LEN": "32768",
            "GPU_MEMORY_UTILIZATION": "0.85",
            "VLLM_EXTRA_ARGS": "--enable-prefix-caching --max-num-seqs 128",
            "VLLM_BIN": "/opt/vllm/bin/vllm",
        },
        "--seed",
        "7",
    )
    assert argv[:3] == ["/opt/vllm/bin/vllm", "serve", "Qwen/Qwen2.5-7B-Instruct"]
    assert "--chat-template" not in argv and "--generation-config" not in argv
    assert argv[argv.index("--port") + 1] == "8101"
    assert argv[argv.index("--max-model-len") + 1] == "32768"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.85"
    assert argv[argv.index("--max-num-seqs") + 1] == "128"
    # The caller's own flags come last, so they win over the defaults.
    assert argv[-2:] == ["--seed", "7"]


def test_vllm_node_quotes_what_it_prints() -> None:
    argv = support.vllm_node_print({}, "--served-model-name", "it's mine")
    assert argv[-2:] == ["--served-model-name", "it's mine"]


def test_vllm_node_refuses_a_missing_template(tmp_path: Any) -> None:
    result = subprocess.run(
        ["sh", str(support.VLLM_NODE), "--print"],
        env={"PATH": "/usr/bin:/bin", "CHAT_TEMPLATE": str(tmp_path / "missing.jinja")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "no chat template" in result.stderr
