"""Command line entry point: ``python -m inference.simulator --port N``.

With ``--refuse-connections`` the process binds its port but never listens on it. The
port stays reserved (nothing else can take it), yet the kernel answers every connection
attempt with a reset, so clients get "connection refused": a machine that is up while its
server is not.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
from collections.abc import Sequence
from contextlib import suppress

import uvicorn

from inference.simulator.app import create_app
from inference.simulator.config import SimulatorConfig
from inference.simulator.engine import EngineConfig
from inference.simulator.faults import FaultSettings
from inference.simulator.responses import SimulatedCrash

_MODEL_SUMMARY = """\
performance model (defaults: roughly a 7B model on one data-centre GPU):
  One engine loop runs steps while there is work, like vLLM v1 with chunked prefill. Each
  step has a budget of --max-num-batched-tokens: every running request in decode takes 1
  token, requests in prefill take a chunk of their uncached prompt tokens; then waiting
  requests are admitted FIFO while --max-num-seqs slots and KV blocks allow. A step takes
  --step-base-ms + --prefill-ms-per-token x prefill tokens + --decode-ms-per-seq x
  decoding requests; at its end finished prefills emit their first token and decoders
  their next, so a long prefill slows everyone's tokens and cached prefixes speed them up.
  The KV cache is --kv-blocks blocks of --block-size tokens with prefix caching by chained
  block hash and LRU eviction of unused blocks. A request that needs a KV block when none
  is free preempts the newest running request, which requeues at the front and
  recomputes. Every delay is multiplied by --time-scale; /metrics latencies are in
  modelled seconds. The old --ttft-base-ms/--ttft-ms and --decode-ms/--token-ms (a fixed
  TTFT part and a batch-of-one token time) are deprecated aliases of --step-base-ms,
  which now plays both roles. Details: pydoc inference.simulator.engine

faults (each drawn per request from random.Random(--seed)):
  --error-rate answers 503 ServiceUnavailableError; --hang-rate sends nothing until the
  client gives up; --latency-spike-rate delays the first token by --latency-spike-ms;
  --die-mid-stream-rate drops the connection after a few tokens (no [DONE]). POST JSON
  with the same names (error_rate, ...) to the simulator-only /_sim/faults to change them
  at run time. --refuse-connections binds the port but never listens.

example: python -m inference.simulator --port 8101 --name sim-1 --time-scale 0.1"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = SimulatorConfig()
    engine = defaults.engine
    faults = defaults.faults
    parser = argparse.ArgumentParser(
        prog="python -m inference.simulator",
        description=(
            "Serve a simulated vLLM OpenAI-compatible API (/v1/chat/completions with and\n"
            "without streaming, /tokenize, /v1/models, /health, /version, /metrics).\n"
            "Replies are deterministic, marked as simulated; token counts are approximate."
        ),
        epilog=_MODEL_SUMMARY,
        formatter_class=_HelpFormatter,
    )
    server = parser.add_argument_group("server")
    server.add_argument(
        "--port",
        type=int,
        metavar="N",
        required=True,
        default=argparse.SUPPRESS,  # keeps "(default: None)" out of --help
        help="TCP port to listen on (0 picks a free one)",
    )
    server.add_argument("--host", default="127.0.0.1", help="interface to bind")
    server.add_argument(
        "--name", default=defaults.name, help="instance name shown in replies and logs"
    )
    server.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn log level",
    )

    model = parser.add_argument_group("model and replies")
    model.add_argument("--model", default=defaults.model, help="model id to serve and accept")
    model.add_argument(
        "--max-model-len",
        type=_positive_int,
        metavar="N",
        default=defaults.max_model_len,
        help="context length in (simulated) tokens; longer prompts are rejected with 400",
    )
    model.add_argument(
        "--seed",
        type=int,
        metavar="N",
        default=defaults.seed,
        help="seed for sampling when a request has none, and for every fault decision",
    )
    model.add_argument(
        "--reply-min-tokens",
        type=_non_negative_int,
        metavar="N",
        default=defaults.reply_min_tokens,
        help="shortest natural reply length in tokens (the simulated marker is never cut)",
    )
    model.add_argument(
        "--reply-max-tokens",
        type=_non_negative_int,
        metavar="N",
        default=defaults.reply_max_tokens,
        help="longest natural reply length in tokens; 0 with --reply-min-tokens 0 replies "
        "with the marker and echo only, no filler",
    )

    perf = parser.add_argument_group("performance model")
    perf.add_argument(
        "--max-num-seqs",
        type=_positive_int,
        metavar="N",
        default=engine.max_num_seqs,
        help="batch slots; further requests wait in a FIFO queue",
    )
    perf.add_argument(
        "--kv-blocks",
        type=_positive_int,
        metavar="N",
        default=engine.kv_blocks,
        help="KV-cache size in blocks (must hold --max-model-len tokens)",
    )
    perf.add_argument(
        "--block-size",
        type=_positive_int,
        metavar="N",
        default=engine.block_size,
        help="tokens per KV-cache block, the unit of prefix caching",
    )
    perf.add_argument(
        "--max-num-batched-tokens",
        type=_positive_int,
        metavar="N",
        default=engine.max_num_batched_tokens,
        help="token budget of one engine step (decode tokens plus prefill chunks)",
    )
    perf.add_argument(
        "--step-base-ms",
        "--ttft-base-ms",
        "--ttft-ms",
        "--decode-ms",
        "--token-ms",
        dest="step_base_ms",
        type=_non_negative_float,
        metavar="MS",
        default=engine.step_base_ms,
        help="fixed time of every engine step, in ms; --ttft-base-ms, --ttft-ms, "
        "--decode-ms and --token-ms are deprecated aliases (the last one given wins)",
    )
    perf.add_argument(
        "--prefill-ms-per-token",
        type=_non_negative_float,
        metavar="MS",
        default=engine.prefill_ms_per_token,
        help="step time per prompt token prefilled in it (cached tokens cost nothing), in ms",
    )
    perf.add_argument(
        "--decode-ms-per-seq",
        type=_non_negative_float,
        metavar="MS",
        default=engine.decode_ms_per_seq,
        help="step time per request decoding one token in it, in ms",
    )
    perf.add_argument(
        "--time-scale",
        type=_non_negative_float,
        metavar="X",
        default=engine.time_scale,
        help="multiplier for every modelled delay (0.01 runs 100x faster; 0 never sleeps)",
    )

    fault = parser.add_argument_group("fault injection")
    fault.add_argument(
        "--error-rate",
        type=_rate,
        metavar="P",
        default=faults.error_rate,
        help="fraction of chat requests answered 503 ServiceUnavailableError",
    )
    fault.add_argument(
        "--latency-spike-rate",
        type=_rate,
        metavar="P",
        default=faults.latency_spike_rate,
        help="fraction of chat requests whose first token is delayed by --latency-spike-ms",
    )
    fault.add_argument(
        "--latency-spike-ms",
        type=_non_negative_float,
        metavar="MS",
        default=faults.latency_spike_ms,
        help="extra delay before the first token of a spiked request, in ms (scaled)",
    )
    fault.add_argument(
        "--hang-rate",
        type=_rate,
        metavar="P",
        default=faults.hang_rate,
        help="fraction of chat requests that get no response at all until the client leaves",
    )
    fault.add_argument(
        "--die-mid-stream-rate",
        type=_rate,
        metavar="P",
        default=faults.die_mid_stream_rate,
        help="fraction of chat requests whose connection drops after a few tokens",
    )
    fault.add_argument(
        "--refuse-connections",
        action="store_true",
        help="bind the port but never listen, so every connection attempt is refused",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Raises ValueError for combinations that no single flag's check catches."""
    return SimulatorConfig(
        model=args.model,
        max_model_len=args.max_model_len,
        name=args.name,
        seed=args.seed,
        reply_min_tokens=args.reply_min_tokens,
        reply_max_tokens=args.reply_max_tokens,
        engine=EngineConfig(
            max_num_seqs=args.max_num_seqs,
            kv_blocks=args.kv_blocks,
            block_size=args.block_size,
            max_num_batched_tokens=args.max_num_batched_tokens,
            step_base_ms=args.step_base_ms,
            prefill_ms_per_token=args.prefill_ms_per_token,
            decode_ms_per_seq=args.decode_ms_per_seq,
            time_scale=args.time_scale,
        ),
        faults=FaultSettings(
            error_rate=args.error_rate,
            latency_spike_rate=args.latency_spike_rate,
            latency_spike_ms=args.latency_spike_ms,
            hang_rate=args.hang_rate,
            die_mid_stream_rate=args.die_mid_stream_rate,
        ),
    )


class _QuietSimulatedCrashes(logging.Filter):
    """Log an injected crash as one line instead of an "Exception in ASGI app" traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, SimulatedCrash):
            record.msg, record.args, record.exc_info = f"{exc} (injected)", (), None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _refuse_connections(bind_host: str, port: int, shown_host: str, name: str) -> int:
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind_host, port))
        # Deliberately no listen(): see the module docstring.
        url = f"http://{shown_host}:{sock.getsockname()[1]}"
        print(f"simulator {name} refusing connections on {url}", flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()  # until a signal ends the process
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    server_config = uvicorn.Config(
        create_app(config),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # A hung request's client may never leave; shutdown must not wait for it forever.
        timeout_graceful_shutdown=2,
    )
    logging.getLogger("uvicorn.error").addFilter(_QuietSimulatedCrashes())
    host = f"[{args.host}]" if ":" in args.host else args.host
    if args.refuse_connections:
        return _refuse_connections(args.host, args.port, host, config.name)
    # Binding ourselves lets the announcement carry the real port (even for --port 0) and
    # guarantees it is printed only once connections can be accepted.
    sock = server_config.bind_socket()
    sock.listen(128)
    url = f"http://{host}:{sock.getsockname()[1]}"
    print(f"simulator {config.name} serving {config.model} on {url}", flush=True)
    uvicorn.Server(server_config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
