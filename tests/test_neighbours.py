"""The project's nearest-neighbour helper: exact modes match brute force, the
approximate mode reports its recall, pairs above a threshold are complete."""

from __future__ import annotations

import numpy as np
import pytest

from synthface.errors import ConfigError
from synthface.neighbours import (
    ApproxSettings,
    SketchSettings,
    iter_search,
    measure_recall,
    pairs_above,
    recall,
    search,
    sketch_candidate_rate,
    sketch_radius,
    top_k_neighbours,
)


def _unit(rng, n, d=64):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(rng, n, centres=20, d=64, spread=0.3):
    c = _unit(rng, centres, d)
    x = c[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_against_a_base_tiles_columns_and_matches_brute_force():
    rng = np.random.default_rng(0)
    q, base = _unit(rng, 70), _unit(rng, 500)
    sims, idx = top_k_neighbours(q, 3, others=base, block_size=16, column_block=37)  # many row and column tiles
    full = q @ base.T
    want = np.argsort(-full, axis=1)[:, :3]
    assert np.array_equal(idx.numpy(), want)
    np.testing.assert_allclose(sims.numpy(), np.take_along_axis(full, want, 1), atol=1e-5)


def test_search_excludes_each_query_row_and_streams_in_batches():
    rng = np.random.default_rng(1)
    x = _unit(rng, 300)
    rows = np.array([5, 17, 299])
    got = search(x[rows], 2, base=x, query_ids=rows)
    full = x[rows] @ x.T
    full[np.arange(3), rows] = -2
    want = np.argsort(-full, axis=1)[:, :2]
    assert np.array_equal(got.ids, want) and got.mode == "exact"
    self_all = search(x, 4)  # self-search: every row's own index is excluded
    assert not (self_all.ids == np.arange(300)[:, None]).any()
    parts = list(iter_search(x, 4, rows_per_batch=64))
    assert [s for s, _ in parts] == [0, 64, 128, 192, 256]
    assert np.array_equal(np.concatenate([p.ids for _, p in parts]), self_all.ids)
    more = search(x[:3], 5, base=x[:4])  # fewer base rows than k: padded with -1 / -inf
    assert (more.ids[:, 4] == -1).all() and np.isneginf(more.sims[:, 4]).all()


def test_pairs_above_exact_is_complete_and_approx_reports_what_it_found():
    rng = np.random.default_rng(2)
    x = _clustered(rng, 600)
    x[400] = x[3]  # an exact duplicate
    full = x @ x.T
    i, j = np.nonzero(np.triu(full >= 0.9, k=1))
    got = pairs_above(x, 0.9, block_size=128)
    assert set(zip(got.i.tolist(), got.j.tolist())) == set(zip(i.tolist(), j.tolist()))
    assert (got.i < got.j).all() and np.all(np.diff(got.sims) <= 0)
    assert (3, 400) in set(zip(got.i.tolist(), got.j.tolist()))
    # approximate: every cell scanned -> the same pairs; fewer cells -> a subset
    every = pairs_above(x, 0.9, mode="approx", approx=ApproxSettings(nlist=8, nprobe=8))
    assert set(zip(every.i.tolist(), every.j.tolist())) == set(zip(i.tolist(), j.tolist()))
    some = pairs_above(x, 0.9, mode="approx", approx=ApproxSettings(nlist=32, nprobe=1))
    assert set(zip(some.i.tolist(), some.j.tolist())) <= set(zip(i.tolist(), j.tolist()))


def _pairs(p):
    return set(zip(p.i.tolist(), p.j.tolist()))


def test_sketch_pairs_equal_exact_pairs_over_many_blocks():
    """Sign sketches propose, exact re-scoring decides: with the default 1e-6 miss bound the
    pairs (many of them just above the threshold) are exactly the exact search's, over a
    grid of index blocks (each pair scanned once: no duplicates, i < j)."""
    rng = np.random.default_rng(4)
    x = _unit(rng, 700, d=128)
    # planted pairs at exact cosines from just below to well above the threshold
    for n, c in enumerate(np.linspace(0.55, 0.95, 60)):
        i, j = n, 300 + n
        noise = rng.standard_normal(128).astype(np.float32)
        noise -= (noise @ x[i]) * x[i]
        x[j] = c * x[i] + np.sqrt(1 - c * c) * noise / np.linalg.norm(noise)
    truth = pairs_above(x, 0.6, block_size=128)
    assert 40 <= len(truth.i) <= 60
    got = pairs_above(x, 0.6, mode="sketch", sketch=SketchSettings(block_rows=96))
    assert _pairs(got) == _pairs(truth) and got.mode == "sketch"
    assert len(got.i) == len(_pairs(got)) and (got.i < got.j).all()
    np.testing.assert_allclose(got.sims, truth.sims, atol=1e-5)
    assert np.all(got.sims >= 0.6)
    # deterministic: the sketches are seeded
    again = pairs_above(x, 0.6, mode="sketch", sketch=SketchSettings(block_rows=96))
    assert np.array_equal(got.i, again.i) and np.array_equal(got.j, again.j)


def test_a_weak_sketch_misses_pairs_but_never_reports_a_false_one():
    rng = np.random.default_rng(5)
    x = _clustered(rng, 600, spread=0.4)  # ~460 pairs at >= 0.9
    truth = _pairs(pairs_above(x, 0.9))
    weak = pairs_above(x, 0.9, mode="sketch", sketch=SketchSettings(bits=16, miss_rate=0.3))
    assert _pairs(weak) < truth  # a strict subset: the bound is loose enough to miss some
    assert np.all(weak.sims >= 0.9)


def test_sketch_radius_follows_the_binomial_tail():
    s = SketchSettings()
    # a higher threshold is a smaller angle: a smaller radius, fewer unrelated pairs proposed
    radii = [sketch_radius(t, s) for t in (0.4, 0.5, 0.6, 0.7)]
    assert radii == sorted(radii, reverse=True)
    assert sketch_candidate_rate(0.6, s) < 1e-5 < sketch_candidate_rate(0.4, s)
    # simulated: pairs at exactly cosine 0.6 fall within the radius; unrelated ones do not
    rng = np.random.default_rng(6)
    bits = 64
    small = SketchSettings(bits=bits, miss_rate=1e-3)
    r = sketch_radius(0.6, small)
    angle = np.arccos(0.6) / np.pi
    dist = rng.binomial(bits, angle, size=200_000)
    assert np.mean(dist > r) <= 1e-3
    assert np.mean(dist > r - 1) > 1e-3  # and it is the smallest such radius
    with pytest.raises(ConfigError, match="multiple of 8"):
        SketchSettings(bits=12)
    with pytest.raises(ConfigError, match="miss_rate"):
        SketchSettings(miss_rate=0.0)


def test_approximate_search_recall_is_measured_against_exact():
    rng = np.random.default_rng(3)
    x = _clustered(rng, 2000)
    exhaustive = measure_recall(x, 5, sample=200, approx=ApproxSettings(nlist=16, nprobe=16))
    assert exhaustive == 1.0
    partial = measure_recall(x, 5, sample=200, approx=ApproxSettings(nlist=64, nprobe=2))
    assert 0.0 < partial < 1.0
    truth = search(x[:50], 5, base=x, query_ids=np.arange(50))
    assert recall(truth, truth) == 1.0
    wrong = search(x[:50], 5, base=x, query_ids=np.arange(50))
    wrong.ids[:, :] = -7
    assert recall(wrong, truth) == 0.0


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="'exact' or 'approx'"):
        search(np.eye(4, dtype=np.float32), 1, mode="fast")


def test_exact_pairs_above_memory_does_not_grow_with_the_number_of_blocks():
    """The exact search keeps only the pairs it finds: memory is one block of scores, not
    something per block visited (it used to keep every block's scratch alive: +527 MiB here,
    5.7 GiB for 100K class centres in `synthface bench finalise`)."""
    import psutil

    x = np.random.default_rng(0).standard_normal((16384, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pairs_above(x[:1024], 0.9999, block_size=512)  # warm-up: torch's first allocations
    proc = psutil.Process()
    before = proc.memory_info().rss
    found = pairs_above(x, 0.9999, block_size=512)  # 528 blocks of 512 x 512 scores
    grown_mib = (proc.memory_info().rss - before) / 2**20
    assert grown_mib < 128, f"RSS grew {grown_mib:.0f} MiB over 528 blocks"
    assert np.all(found.sims >= 0.9999)
