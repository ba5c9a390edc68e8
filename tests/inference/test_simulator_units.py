"""Replies, stop strings, fault draws and the command line, without a server."""

from __future__ import annotations

import pytest

from inference.simulator.__main__ import build_parser, config_from_args, main
from inference.simulator.faults import FaultInjector, FaultSettings, FaultSettingsError
from inference.simulator.reply import cut_reply, marker, natural_reply
from inference.simulator.tokens import tokenize

MESSAGES = [{"role": "user", "content": "Tell me about the weather."}]


def _reply(seed: int = 0, temperature: float = 0.8, lo: int = 20, hi: int = 120) -> list[str]:
    return natural_reply(
        "m", "sim", MESSAGES, seed=seed, temperature=temperature, min_tokens=lo, max_tokens=hi
    )


def test_natural_reply_is_the_marker_then_filler_of_a_bounded_length() -> None:
    head = marker("m", "sim", MESSAGES)
    lengths = {len(_reply(seed)) for seed in range(30)}
    assert min(lengths) >= len(tokenize(head)) and max(lengths) <= 120
    assert len(lengths) > 5  # the length really depends on the seed
    for seed in range(5):
        text = "".join(_reply(seed))
        assert text.startswith(head) and len(text) > len(head)
        assert tokenize(text) == _reply(seed)  # re-tokenising the reply gives its tokens


def test_same_seed_same_reply_and_greedy_ignores_the_seed() -> None:
    assert _reply(seed=7) == _reply(seed=7)
    assert any(_reply(seed=7) != _reply(seed=s) for s in range(8, 12))
    assert _reply(seed=1, temperature=0) == _reply(seed=2, temperature=0)


def test_zero_bounds_reply_with_the_marker_only() -> None:
    assert "".join(_reply(lo=0, hi=0)) == marker("m", "sim", MESSAGES)


def test_max_tokens_cuts_with_length_and_a_natural_end_is_stop() -> None:
    pieces = _reply()
    short = cut_reply(pieces, 5, ())
    assert short.finish_reason == "length" and short.pieces == tuple(pieces[:5])
    whole = cut_reply(pieces, len(pieces), ())
    assert whole.finish_reason == "stop" and whole.stop_reason is None
    assert whole.text == "".join(pieces)


def test_stop_string_spanning_tokens_is_cut_out_and_ends_generation() -> None:
    pieces = ["Hello", " wor", "ld", " and", " more"]
    out = cut_reply(pieces, 10, ["or", "rld an"])
    # "or" completes inside " wor": generation stops at that token, text before the stop.
    assert out.text == "Hello w" and out.pieces == ("Hello", " wor")
    assert (out.finish_reason, out.stop_reason) == ("stop", "or")
    spanning = cut_reply(pieces, 10, ["ld and"])
    assert spanning.text == "Hello wor" and len(spanning.pieces) == 4
    assert spanning.deltas == ("Hello", " wor", "", "")


def test_stop_beyond_the_token_limit_is_a_length_finish() -> None:
    out = cut_reply(["a", " b", " c", " d"], 2, [" c"])
    assert (out.finish_reason, out.text) == ("length", "a b")


def test_fault_draws_are_reproducible_for_a_seed() -> None:
    settings = FaultSettings(error_rate=0.3, hang_rate=0.2, die_mid_stream_rate=0.3)
    plans = FaultInjector(settings, seed=42)
    again = FaultInjector(settings, seed=42)
    sequence = [plans.draw() for _ in range(50)]
    assert sequence == [again.draw() for _ in range(50)]
    assert {p.error for p in sequence} == {True, False}
    assert any(p.die_after_tokens for p in sequence) and any(p.hang for p in sequence)
    other = FaultInjector(settings, seed=43)
    assert [other.draw() for _ in range(50)] != sequence


def test_rates_of_zero_and_one_are_never_and_always() -> None:
    never = FaultInjector(FaultSettings(), seed=1)
    assert not any(p.error or p.hang or p.spike_ms or p.die_after_tokens for p in
                   (never.draw() for _ in range(100)))  # fmt: skip
    always = FaultInjector(FaultSettings(latency_spike_rate=1, latency_spike_ms=5), seed=1)
    assert all(always.draw().spike_ms == 5 for _ in range(100))


@pytest.mark.parametrize(
    "changes",
    [{"error_rate": 1.5}, {"hang_rate": "half"}, {"bogus": 1}, {"refuse_connections": True}],
)
def test_bad_fault_updates_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(FaultSettingsError):
        FaultSettings().updated(changes)


def test_cli_help_states_every_flag_with_its_default() -> None:
    text = build_parser().format_help()
    flags = [
        "--max-num-seqs", "--kv-blocks", "--block-size", "--max-num-batched-tokens",
        "--step-base-ms", "--ttft-base-ms", "--ttft-ms", "--prefill-ms-per-token",
        "--decode-ms", "--token-ms", "--decode-ms-per-seq",
        "--time-scale", "--seed", "--reply-min-tokens", "--reply-max-tokens", "--error-rate",
        "--latency-spike-rate", "--latency-spike-ms", "--hang-rate", "--die-mid-stream-rate",
        "--refuse-connections", "/_sim/faults", "7B",
    ]  # fmt: skip
    for flag in flags:
        assert flag in text, flag
    assert text.count("(default:") >= 20


def test_cli_flags_reach_the_config_and_old_names_still_work() -> None:
    args = build_parser().parse_args(
        ["--port", "0", "--ttft-ms", "3", "--token-ms", "4", "--max-num-seqs", "2",
         "--time-scale", "0.5", "--hang-rate", "0.25", "--seed", "9"]
    )  # fmt: skip
    config = config_from_args(args)
    # Both old names now set the one fixed step time; the last one given wins.
    assert config.engine.step_base_ms == 4
    new = build_parser().parse_args(
        ["--port", "0", "--step-base-ms", "7", "--max-num-batched-tokens", "512"]
    )
    assert config_from_args(new).engine.step_base_ms == 7
    assert config_from_args(new).engine.max_num_batched_tokens == 512
    assert (config.engine.max_num_seqs, config.engine.time_scale) == (2, 0.5)
    assert (config.faults.hang_rate, config.seed) == (0.25, 9)


@pytest.mark.parametrize(
    "argv",
    [
        ["--kv-blocks", "10", "--max-model-len", "8192"],
        ["--error-rate", "2"],
        ["--reply-min-tokens", "50", "--reply-max-tokens", "10"],
        ["--time-scale", "-1"],
    ],
)
def test_cli_rejects_impossible_settings(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:

    with pytest.raises(SystemExit) as caught:
        main(["--port", "0", *argv])
    assert caught.value.code == 2
    assert "error" in capsys.readouterr().err
