"""What the simulated model "says": a visibly fake reply, sized and cut like vLLM output.

A reply is the marker ``[simulated MODEL @ NAME] You said: <last user message>`` followed
by pseudo-text filler up to a *natural length*, where the model would emit end-of-sequence
and finish with ``stop``. The natural length is drawn between the configured minimum and
maximum (in tokens) but never cuts the marker, so a reply always shows what it is and what
it answered. `max_tokens`, the context window and stop strings then cut that text exactly
where vLLM would.

Sampling is imitated just enough to behave like the real thing for callers: temperature 0
is greedy, so the text depends only on the prompt (as with vLLM, where the seed does not
matter for greedy decoding). Above 0 the text depends on the prompt, the seed (the
request's, else the server's) and the temperature, which also widens the filler's
vocabulary. The same request with the same seed always yields the same text.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from inference.simulator.tokens import render_chatml, tokenize

# Deliberately dull words: a reader should never mistake filler for a model's answer.
_VOCABULARY = (
    "this", "is", "simulated", "filler", "text", "from", "the", "switchboard", "simulator",
    "no", "model", "ran", "and", "every", "word", "here", "stands", "in", "for", "a", "token",
    "of", "output", "so", "that", "length", "limits", "stop", "strings", "latency", "batching",
    "cache", "reuse", "can", "be", "tested", "without", "gpu", "replies", "are", "deterministic",
    "given", "seed", "prompt", "temperature", "placeholder", "sample", "sequence", "decode",
    "step", "scheduler", "block", "queue", "request", "stream", "chunk", "usage", "counter",
)  # fmt: skip
_SENTENCE_WORDS = (4, 11)


@dataclass(frozen=True)
class ReplyOutput:
    """The planned output of one request, token by token.

    `deltas[i]` is the text token i adds to the visible reply; it may be shorter than the
    token (or empty) where a stop string begins, because the stop string itself is never
    shown. `pieces` are the tokens generated, stop-string tokens included, which is what
    usage counts and the KV cache stores.
    """

    pieces: tuple[str, ...]
    deltas: tuple[str, ...]
    finish_reason: str
    stop_reason: str | None

    @property
    def text(self) -> str:
        return "".join(self.deltas)


def marker(model: str, name: str, messages: Sequence[Mapping[str, str]]) -> str:
    last_user = ""
    for message in messages:
        if message["role"] == "user":
            last_user = message["content"]
    return f"[simulated {model} @ {name}] You said: {last_user}"


def natural_reply(
    model: str,
    name: str,
    messages: Sequence[Mapping[str, str]],
    *,
    seed: int,
    temperature: float,
    min_tokens: int,
    max_tokens: int,
) -> list[str]:
    """The whole reply the model would give with no limits, as token pieces."""
    prompt = render_chatml(messages)
    greedy = temperature == 0
    key = prompt if greedy else f"{seed}\x00{temperature!r}\x00{prompt}"
    digest = hashlib.sha256(key.encode()).digest()
    # Not security sensitive: a seeded generator is the point, as in vLLM's sampler.
    rng = random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311
    target = rng.randint(min_tokens, max_tokens) if max_tokens > 0 else 0
    head = marker(model, name, messages)
    head_pieces = tokenize(head)
    if target <= len(head_pieces):
        return head_pieces
    # Hotter sampling draws from more of the vocabulary; greedy keeps to a narrow core.
    breadth = max(6, min(len(_VOCABULARY), round(len(_VOCABULARY) * (0.3 + temperature / 2))))
    words: list[str] = []
    needed = target - len(head_pieces) + 1  # +1: the head's last piece may absorb a space
    produced = 0
    while produced < needed:
        count = rng.randint(*_SENTENCE_WORDS)
        sentence = [_VOCABULARY[rng.randrange(breadth)] for _ in range(count)]
        sentence[0] = sentence[0].capitalize()
        words.append(" " + " ".join(sentence) + ".")
        produced += count + 1
    return tokenize(head + "".join(words))[:target]


def cut_reply(pieces: Sequence[str], limit: int, stops: Sequence[str]) -> ReplyOutput:
    """Apply the token limit and stop strings to a natural reply, as vLLM does.

    Generation ends at the token that completes the first stop string (visible text is
    cut just before it, finish ``stop``), else at `limit` tokens (finish ``length``), else
    at the reply's natural end (finish ``stop``).
    """
    text = ""
    longest = max((len(s) for s in stops), default=0)
    for index, piece in enumerate(pieces[:limit]):
        search_from = max(0, len(text) - longest + 1)
        text += piece
        found = [(text.find(s, search_from), s) for s in stops]
        hits = [(at, s) for at, s in found if at >= 0]
        if hits:
            at, stop = min(hits)
            return ReplyOutput(
                pieces=tuple(pieces[: index + 1]),
                deltas=_clip(pieces[: index + 1], at),
                finish_reason="stop",
                stop_reason=stop,
            )
    kept = tuple(pieces[:limit])
    finish = "length" if len(pieces) > limit else "stop"
    return ReplyOutput(pieces=kept, deltas=kept, finish_reason=finish, stop_reason=None)


def _clip(pieces: Sequence[str], visible: int) -> tuple[str, ...]:
    deltas: list[str] = []
    position = 0
    for piece in pieces:
        deltas.append(piece[: max(0, visible - position)])
        position += len(piece)
    return tuple(deltas)
