"""Command line entry point: ``python -m inference.simulator --port N``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import uvicorn

from inference.simulator.app import SimulatorConfig, create_app


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m inference.simulator",
        description=(
            "Serve a simulated vLLM OpenAI-compatible API (/v1/chat/completions with and "
            "without streaming, /v1/models, /health, /version, /metrics). Replies are "
            "deterministic, marked as simulated, and token counts are approximate."
        ),
        epilog=(
            "example: python -m inference.simulator --port 8101 --name sim-1 "
            "--ttft-ms 50 --token-ms 10"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=int,
        required=True,
        default=argparse.SUPPRESS,  # keeps "(default: None)" out of --help
        help="TCP port to listen on (0 picks a free one)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--model", default=defaults.model, help="model id to serve and accept")
    parser.add_argument(
        "--max-model-len",
        type=_positive_int,
        default=defaults.max_model_len,
        help="context length in (simulated) tokens; longer prompts are rejected with 400",
    )
    parser.add_argument(
        "--ttft-ms",
        type=_non_negative_float,
        default=defaults.ttft_ms,
        help="simulated prefill delay before the first token, in milliseconds",
    )
    parser.add_argument(
        "--token-ms",
        type=_non_negative_float,
        default=defaults.token_ms,
        help="simulated delay between output tokens, in milliseconds",
    )
    parser.add_argument(
        "--name", default=defaults.name, help="instance name shown in replies and logs"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn log level",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = SimulatorConfig(
        model=args.model,
        max_model_len=args.max_model_len,
        ttft_ms=args.ttft_ms,
        token_ms=args.token_ms,
        name=args.name,
    )
    server_config = uvicorn.Config(
        create_app(config), host=args.host, port=args.port, log_level=args.log_level
    )
    # Binding ourselves lets the announcement carry the real port (even for --port 0) and
    # guarantees it is printed only once connections can be accepted.
    sock = server_config.bind_socket()
    sock.listen(128)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"simulator {config.name} serving {config.model} on http://{host}:{port}", flush=True)
    uvicorn.Server(server_config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
