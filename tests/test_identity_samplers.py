"""Samplers and packing: unit norm, determinism, packing beats uniform, gallery band."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthface.errors import ConfigError
from synthface.identity.config import GallerySamplerConfig, PackedConfig
from synthface.neighbours import max_similarity_to, nearest_neighbour, top_k_neighbours
from synthface.identity.packing import pack
from synthface.identity.samplers import auto_concentration, gallery_vectors, redraw_uniform, uniform_vectors


def test_uniform_is_unit_float32_deterministic_and_independent_of_n():
    a = uniform_vectors(7, 1500)
    assert a.dtype == np.float32 and a.shape == (1500, 512)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, uniform_vectors(7, 1500))
    assert np.array_equal(a[:40], uniform_vectors(7, 40))  # identity i does not depend on N
    assert not np.array_equal(a, uniform_vectors(8, 1500))
    r = redraw_uniform(7, np.array([3, 9]), 1)
    assert np.array_equal(r, redraw_uniform(7, np.array([3, 9]), 1))
    assert not np.array_equal(r, redraw_uniform(7, np.array([3, 9]), 2))


def test_top_k_neighbours_is_exact():
    x = torch.nn.functional.normalize(torch.randn(700, 512, generator=torch.Generator().manual_seed(0)), dim=1)
    sims, idx = top_k_neighbours(x, 5, block_size=128)  # several blocks, symmetric path
    full = x @ x.T
    full.fill_diagonal_(-2)
    want_sims, want_idx = full.topk(5, dim=1)
    assert torch.equal(idx, want_idx)
    torch.testing.assert_close(sims, want_sims, atol=1e-5, rtol=0)
    g_sims, g_idx = max_similarity_to(x[:30], x[100:200], block_size=16)
    full_g = x[:30] @ x[100:200].T
    assert np.array_equal(g_idx, full_g.argmax(1).numpy())


def test_packing_beats_uniform_on_separation():
    start = uniform_vectors(1, 400)
    uniform_nn, _ = nearest_neighbour(start)
    packed, report = pack(start, PackedConfig(steps=40, rounds=2))
    np.testing.assert_allclose(np.linalg.norm(packed, axis=1), 1.0, atol=1e-5)
    packed_nn, _ = nearest_neighbour(packed)
    assert packed_nn.max() < uniform_nn.max() - 0.03
    assert packed_nn.mean() < uniform_nn.mean()
    assert report.steps == 80 and report.start_max_cosine == pytest.approx(uniform_nn.max(), abs=1e-5)
    # deterministic
    again, _ = pack(start, PackedConfig(steps=40, rounds=2))
    assert np.array_equal(packed, again)


def test_gallery_regulariser_pulls_towards_the_gallery():
    start = uniform_vectors(2, 300)
    gallery = uniform_vectors(99, 20)
    before = max_similarity_to(start, gallery)[0].mean()
    free, _ = pack(start, PackedConfig(steps=40))
    pulled, _ = pack(start, PackedConfig(steps=40, gallery_weight=1.0), gallery=gallery)
    assert max_similarity_to(pulled, gallery)[0].mean() > max_similarity_to(free, gallery)[0].mean() + 0.02
    assert max_similarity_to(pulled, gallery)[0].mean() > before


@pytest.mark.parametrize("method", ["vmf", "gaussian"])
def test_gallery_sampler_stays_in_band(method):
    gallery = uniform_vectors(5, 50)
    cfg = GallerySamplerConfig(method=method, min_similarity=0.3, max_similarity=0.45)
    draws = gallery_vectors(3, np.arange(300), gallery, cfg)
    cos = (draws.vectors * gallery[draws.anchors]).sum(1)
    assert cos.min() >= 0.3 - 1e-6 and cos.max() <= 0.45 + 1e-6
    assert 0.33 < np.median(cos) < 0.42  # centred in the band, not piled on an edge
    np.testing.assert_allclose(np.linalg.norm(draws.vectors, axis=1), 1.0, atol=1e-5)
    assert len(np.unique(draws.anchors)) > 40
    again = gallery_vectors(3, np.arange(300), gallery, cfg)
    assert np.array_equal(draws.vectors, again.vectors)


def test_gallery_sampler_gives_up_on_an_unreachable_band():
    gallery = uniform_vectors(5, 10)
    # kappa for a cosine of ~0.9 can never land in [0.1, 0.15]
    cfg = GallerySamplerConfig(min_similarity=0.1, max_similarity=0.15, concentration=auto_concentration(0.9), max_draws=2)
    with pytest.raises(ConfigError, match="identity.gallery_sampler"):
        gallery_vectors(0, np.arange(20), gallery, cfg)
