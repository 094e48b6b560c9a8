"""Algebraic spherical codes: well-separated identity vectors without an all-pairs search.

Why: packing by optimisation needs every identity's nearest neighbours, and on
vectors spread over the 512-d sphere no index beats brute force (docs/
identity.md), so it costs N^2: hours at a million identities on a CPU. A
binary code with a known weight distribution gives the separation by
construction, in O(N d^2).

The code: the extended dual of a binary BCH code of length 511 over GF(2^9).
A codeword is the truth table f(x) = Tr(a x + b x^3 [+ c x^5]) over all 512
elements x of GF(2^9); as a vector, (-1)^f(x) / sqrt(512). The cosine of two
codewords is the Walsh coefficient at 0 of their sum (again a codeword) over
512, and for m = 9 (odd) those coefficients are known:

- ``gold`` (a, b: 2^18 codewords): x^3 is almost bent, so |cos| is 0 or 1/16;
- ``kasami`` (a, b, c: 2^27 codewords): the dual of the triple-error-
  correcting BCH code, |cos| in {0, 1/16, 1/8}.

Uniform vectors at these sizes have a max nearest-neighbour cosine of about
0.23 (10k) to 0.31 (1M). A seeded Haar-random rotation then turns the +-1
hypercube corners into unit vectors in general position (each one uniform on
the sphere) without changing any cosine. Identity i's codeword is fixed by
(seed, i) through a seeded invertible map of i's bits, so distinct ids get
distinct codewords and a bigger bank starts with the same identities.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from synthface import seeds
from synthface.errors import ConfigError
from synthface.identity.config import EMBEDDING_DIM

_M = 9  # GF(2^9): codeword length 2^9 = 512 = EMBEDDING_DIM
_POLY = (1 << 9) | (1 << 4) | 1  # x^9 + x^4 + 1, primitive
_WORDS = EMBEDDING_DIM // 64  # a codeword as uint64 words (Hamming search)
BLOCK = 65_536  # ids encoded and rotated at a time (memory)


@dataclass(frozen=True)
class CodeFamily:
    name: str
    exponents: tuple[int, ...]
    max_cosine: float  # the largest cosine between two distinct codewords

    @property
    def message_bits(self) -> int:
        return _M * len(self.exponents)

    @property
    def capacity(self) -> int:
        return 1 << self.message_bits


GOLD = CodeFamily("gold", (1, 3), 1 / 16)
KASAMI = CodeFamily("kasami", (1, 3, 5), 1 / 8)


def family_for(n: int) -> CodeFamily:
    """The best-separated family that holds ``n`` identities with as many again spare for redraws."""
    if 2 * n <= GOLD.capacity:
        return GOLD
    if 2 * n <= KASAMI.capacity:
        return KASAMI
    raise ConfigError(f"identity.packed.start 'code' holds at most {KASAMI.capacity // 2:,} identities, asked {n:,}")


def _gf_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise product in GF(2^9) (polynomial basis)."""
    a, b = a.astype(np.int64).copy(), b.astype(np.int64).copy()
    out = np.zeros_like(a)
    for _ in range(_M):
        out ^= np.where(b & 1, a, 0)
        b >>= 1
        a <<= 1
        a = np.where(a & (1 << _M), a ^ _POLY, a)
    return out


def _trace(y: np.ndarray) -> np.ndarray:
    """Absolute trace GF(2^9) -> GF(2): y + y^2 + ... + y^256."""
    acc, t = np.zeros_like(y), y.copy()
    for _ in range(_M):
        acc ^= t
        t = _gf_mul(t, t)
    return acc


@lru_cache(maxsize=None)
def generator_matrix(family: CodeFamily) -> np.ndarray:
    """uint8[message_bits, 512]: row (e, i) is the truth table of Tr(2^i x^e)."""
    x = np.arange(1 << _M, dtype=np.int64)
    rows = []
    for e in family.exponents:
        xe = np.ones_like(x)
        for _ in range(e):
            xe = _gf_mul(xe, x)
        for bit in range(_M):
            rows.append(_trace(_gf_mul(np.full_like(x, 1 << bit), xe)))
    return np.array(rows, dtype=np.uint8)


def _invertible_gf2(gen: np.random.Generator, k: int) -> np.ndarray:
    while True:
        a = gen.integers(0, 2, (k, k), dtype=np.uint8)
        if _gf2_rank(a) == k:
            return a


def _gf2_rank(a: np.ndarray) -> int:
    a = a.copy() % 2
    rank = 0
    for col in range(a.shape[1]):
        pivot = np.nonzero(a[rank:, col])[0]
        if len(pivot) == 0:
            continue
        p = rank + pivot[0]
        a[[rank, p]] = a[[p, rank]]
        below = np.nonzero(a[:, col])[0]
        below = below[below != rank]
        a[below] ^= a[rank]
        rank += 1
        if rank == a.shape[0]:
            break
    return rank


_CHUNK = 9  # message bits per lookup table (512 entries of 8 uint64 each)


@dataclass(frozen=True)
class SeededCode:
    family: CodeFamily
    generator: np.ndarray  # uint8[k, 512]: A @ G, A a seeded invertible GF(2) matrix
    offset: np.ndarray  # uint8[512]: a seeded codeword added to all (keeps every cosine)
    rotation: np.ndarray  # float32[512, 512]: seeded Haar-random orthogonal matrix
    tables: np.ndarray  # uint64[k / 9, 512, 8]: XOR of generator rows for every 9-bit chunk value


def seeded_code(run_seed: int, family: CodeFamily) -> SeededCode:
    gen = seeds.rng(run_seed, purpose=f"identity.code.{family.name}")
    g = generator_matrix(family).astype(np.int64)
    k = family.message_bits
    a = _invertible_gf2(gen, k).astype(np.int64)
    offset = (gen.integers(0, 2, k) @ g) % 2
    z = gen.standard_normal((EMBEDDING_DIM, EMBEDDING_DIM))
    q, r = np.linalg.qr(z)
    q *= np.sign(np.diag(r))  # Haar measure (Mezzadri's sign fix)
    generator = ((a @ g) % 2).astype(np.uint8)
    return SeededCode(family, generator, offset.astype(np.uint8), q.astype(np.float32), _tables(generator))


def _tables(generator: np.ndarray) -> np.ndarray:
    """Codeword bits (packed) of every 9-bit message chunk: a codeword is the XOR of
    one entry per chunk, so encoding is 3 table look-ups, not a GF(2) matrix product."""
    rows = np.packbits(generator, axis=1).view(np.uint64)  # [k, 8]
    chunks = len(rows) // _CHUNK
    out = np.zeros((chunks, 1 << _CHUNK, _WORDS), dtype=np.uint64)
    for c in range(chunks):
        for b in range(_CHUNK):
            out[c, 1 << b : 2 << b] = out[c, : 1 << b] ^ rows[c * _CHUNK + b]
    return out


def _check_messages(code: SeededCode, messages: np.ndarray) -> np.ndarray:
    messages = np.asarray(messages, dtype=np.int64)
    if len(messages) and (messages.min() < 0 or messages.max() >= code.family.capacity):
        raise ConfigError(f"code message out of range for the {code.family.name} code")
    return messages


def message_words(code: SeededCode, messages: np.ndarray, with_offset: bool = True) -> np.ndarray:
    """uint64[n, 8]: the packed codeword bits of ``messages`` (int64 < capacity)."""
    messages = _check_messages(code, messages)
    out = np.zeros((len(messages), _WORDS), dtype=np.uint64)
    for c in range(len(code.tables)):
        out ^= code.tables[c][(messages >> (c * _CHUNK)) & ((1 << _CHUNK) - 1)]
    if with_offset:
        out ^= np.packbits(code.offset).view(np.uint64)
    return out


def codewords(code: SeededCode, messages: np.ndarray) -> np.ndarray:
    """uint8[n, 512] bits of the codewords of ``messages``."""
    return np.unpackbits(message_words(code, messages).view(np.uint8), axis=1)


def code_vectors(code: SeededCode, messages: np.ndarray) -> np.ndarray:
    """Unit float32[n, 512]: the rotated +-1/sqrt(512) vectors of ``messages``' codewords, in blocks."""
    import torch

    messages = _check_messages(code, messages)
    n = len(messages)
    out = np.empty((n, EMBEDDING_DIM), dtype=np.float32)
    rot = torch.from_numpy(code.rotation)
    scale = np.float32(1 / np.sqrt(EMBEDDING_DIM))
    for s in range(0, n, BLOCK):
        bits = codewords(code, messages[s : s + BLOCK])
        signs = torch.from_numpy(scale - (2 * scale) * bits.astype(np.float32))
        torch.matmul(signs, rot, out=torch.from_numpy(out[s : s + BLOCK]))
    return out


def target_distance(family: CodeFamily) -> int:
    """Hamming distance of two codewords at the family's largest cosine."""
    return int(round(EMBEDDING_DIM * (1 - family.max_cosine) / 2))


def nearest_by_bound(code: SeededCode, messages: np.ndarray, tries: int = 256) -> np.ndarray:
    """For each row (a codeword, given by its message), another row at the family's
    largest cosine, or -1: int64[N].

    A codeword at the family's maximum cosine is a nearest neighbour (no pair
    is closer), so every hit is exact. Two codewords' cosine depends only on
    the XOR of their messages (the code is linear), so the search lists
    ``tries`` small messages u whose codeword has the target weight, and looks
    up message m XOR u among the bank's messages. Rows left at -1 (small or
    sparse banks) need a full search.
    """
    messages = _check_messages(code, messages)
    n = len(messages)
    nn = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return nn
    span = 1 << int(messages.max()).bit_length()
    target = target_distance(code.family)
    diffs = []
    for s in range(1, span, BLOCK):
        u = np.arange(s, min(s + BLOCK, span), dtype=np.int64)
        w = np.bitwise_count(message_words(code, u, with_offset=False)).sum(axis=1)
        diffs.extend(u[w == target][: tries - len(diffs)].tolist())
        if len(diffs) >= tries:
            break
    order = np.argsort(messages, kind="stable")
    sorted_msgs = messages[order]
    pending = np.arange(n)
    for u in diffs:
        want = messages[pending] ^ u
        pos = np.minimum(np.searchsorted(sorted_msgs, want), n - 1)
        hit = sorted_msgs[pos] == want
        nn[pending[hit]] = order[pos[hit]]
        pending = pending[~hit]
        if len(pending) == 0:
            break
    return nn
