#!/bin/sh
# One vLLM server of the GPU pool, with the settings Qwen-7B-Chat needs to chat
# correctly. compose.yaml runs this very script inside the official vLLM image, and a
# bare-metal node runs it from a checkout (with the `gpu` extra installed), so both are
# started the same way from the same variables (see docker/.env.example):
#
#   MODEL                   model to serve, also its served name (Qwen/Qwen-7B-Chat)
#   CHAT_TEMPLATE           ChatML template file; empty: the tokenizer's own template
#   GENERATION_CONFIG       folder with generation_config.json (stop tokens, sampling
#                           defaults); empty: the model's own
#   VLLM_HOST / VLLM_PORT   where to listen (0.0.0.0 / 8000)
#   MAX_MODEL_LEN           context length in tokens (8192, Qwen-7B-Chat's)
#   GPU_MEMORY_UTILIZATION  share of GPU memory vLLM may take (0.90)
#   VLLM_EXTRA_ARGS         more `vllm serve` flags, split on spaces
#   VLLM_BIN                the vllm executable (vllm, from PATH)
#
#   docker/vllm-node.sh [--print] [more vllm serve flags ...]
#
# --print writes the command line instead of running it (CI has no GPU).
set -eu
set -f # VLLM_EXTRA_ARGS is split on purpose, but never globbed

here=$(cd "$(dirname "$0")" && pwd)
MODEL="${MODEL:-Qwen/Qwen-7B-Chat}"
# `-` rather than `:-`: set and empty means "none", unset means Qwen-7B-Chat's.
CHAT_TEMPLATE="${CHAT_TEMPLATE-$here/vllm/qwen-chatml.jinja}"
GENERATION_CONFIG="${GENERATION_CONFIG-$here/vllm/qwen-7b-chat}"

print=0
if [ "${1-}" = "--print" ]; then
  print=1
  shift
fi

# The caller's flags go last (argparse: the last occurrence wins, so they override);
# append everything after them, then rotate them to the end.
n=$#
set -- "$@" serve "$MODEL" \
  --host "${VLLM_HOST:-0.0.0.0}" \
  --port "${VLLM_PORT:-8000}" \
  --trust-remote-code \
  --max-model-len "${MAX_MODEL_LEN:-8192}" \
  --gpu-memory-utilization "${GPU_MEMORY_UTILIZATION:-0.90}"
if [ -n "$CHAT_TEMPLATE" ]; then
  [ -f "$CHAT_TEMPLATE" ] || { echo "vllm-node: no chat template at $CHAT_TEMPLATE" >&2; exit 2; }
  set -- "$@" --chat-template "$CHAT_TEMPLATE"
fi
if [ -n "$GENERATION_CONFIG" ]; then
  [ -f "$GENERATION_CONFIG/generation_config.json" ] || {
    echo "vllm-node: no generation_config.json in $GENERATION_CONFIG" >&2
    exit 2
  }
  set -- "$@" --generation-config "$GENERATION_CONFIG"
fi
# shellcheck disable=SC2086 # split on purpose
set -- "$@" ${VLLM_EXTRA_ARGS:-}
i=0
while [ "$i" -lt "$n" ]; do
  set -- "$@" "$1"
  shift
  i=$((i + 1))
done

if [ "$print" = 1 ]; then
  line="${VLLM_BIN:-vllm}"
  for arg in "$@"; do
    case $arg in
      "" | *[!A-Za-z0-9_./:=,@%+-]*) arg="'$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")'" ;;
    esac
    line="$line $arg"
  done
  printf '%s\n' "$line"
  exit 0
fi
exec "${VLLM_BIN:-vllm}" "$@"
