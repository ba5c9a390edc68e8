"""A paged KV cache with automatic prefix caching, kept the way vLLM keeps its block pool.

The cache is `num_blocks` blocks of `block_size` token slots. A sequence holds a list of
blocks covering its tokens. Once a block is full its content is identified by a *block
hash*: a hash of the block's token ids chained with the previous block's hash, so a hash
names the whole prefix up to and including that block. A later request whose prompt
starts with the same tokens finds those hashes and shares the blocks instead of computing
them again.

Blocks nobody references stay cached (and keep counting as free) until they are needed:
the free queue is least-recently-freed first, and a sequence's blocks are freed tail first,
so the ends of old prompts are evicted before their shared beginnings.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence


def chain_hash(parent: bytes | None, token_ids: Sequence[int]) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(parent if parent is not None else b"\x00root")
    digest.update(",".join(map(str, token_ids)).encode())
    return digest.digest()


class BlockHasher:
    """Incrementally hashes the full blocks of one sequence's token ids."""

    def __init__(self, token_ids: Sequence[int], block_size: int) -> None:
        self._ids = token_ids
        self._size = block_size
        self._hashes: list[bytes] = []

    def hashes(self, num_tokens: int) -> list[bytes]:
        """Hashes of the full blocks within the first `num_tokens` tokens."""
        wanted = min(num_tokens, len(self._ids)) // self._size
        while len(self._hashes) < wanted:
            start = len(self._hashes) * self._size
            parent = self._hashes[-1] if self._hashes else None
            self._hashes.append(chain_hash(parent, self._ids[start : start + self._size]))
        return self._hashes[:wanted]


class BlockPool:
    """Reference-counted blocks, a hash index of cached full blocks and an LRU free queue."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError("the KV cache needs at least one block")
        self.num_blocks = num_blocks
        self._refs = [0] * num_blocks
        self._hash_of: list[bytes | None] = [None] * num_blocks
        self._by_hash: dict[bytes, int] = {}
        # Every block with no references, oldest first; cached ones among them are the
        # eviction candidates, which is why a hit has to pull its block out of here.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks referenced by a sequence (cached-but-idle blocks are free)."""
        return (self.num_blocks - len(self._free)) / self.num_blocks

    def lookup(self, hashes: Sequence[bytes]) -> list[int]:
        """The blocks caching the longest run of `hashes` from the start."""
        found: list[int] = []
        for block_hash in hashes:
            block = self._by_hash.get(block_hash)
            if block is None:
                break
            found.append(block)
        return found

    def can_take(self, hits: Sequence[int], new: int) -> bool:
        revived = sum(1 for block in hits if self._refs[block] == 0)
        return new <= len(self._free) - revived

    def take(self, hits: Sequence[int], new: int) -> list[int]:
        """Reference the cache hits and allocate `new` fresh blocks after them."""
        if not self.can_take(hits, new):
            raise RuntimeError("not enough free KV blocks; check can_take first")
        for block in hits:
            if self._refs[block] == 0:
                del self._free[block]
            self._refs[block] += 1
        fresh = self.allocate(new)
        assert fresh is not None  # guaranteed by can_take
        return [*hits, *fresh]

    def allocate(self, count: int) -> list[int] | None:
        """`count` blocks from the head of the free queue, evicting what they cached."""
        if count > len(self._free):
            return None
        blocks = []
        for _ in range(count):
            block, _ = self._free.popitem(last=False)
            evicted = self._hash_of[block]
            if evicted is not None:
                del self._by_hash[evicted]
                self._hash_of[block] = None
            self._refs[block] = 1
            blocks.append(block)
        return blocks

    def register(self, block: int, block_hash: bytes) -> None:
        """Make a full block findable by its hash (first writer wins, like vLLM)."""
        if self._hash_of[block] is None and block_hash not in self._by_hash:
            self._hash_of[block] = block_hash
            self._by_hash[block_hash] = block

    def release(self, blocks: Sequence[int]) -> None:
        for block in reversed(blocks):  # tail first, so prompt tails are evicted first
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free[block] = None

    def cached_blocks(self) -> int:
        return len(self._by_hash)
