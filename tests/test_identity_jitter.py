"""Per-image condition jitter: deterministic, unit, above the floor, Vec2Face sigma mix."""

from __future__ import annotations

import numpy as np
import pytest

from synthface.errors import ConfigError
from pipelines.config import load_factory_config
from synthface.identity.config import JitterConfig
from synthface.identity.jitter import jitter_identities, jitter_identity, sigma_for
from synthface.identity.samplers import uniform_vectors


def test_jitter_is_deterministic_unit_and_keyed_by_image():
    e = uniform_vectors(0, 1)[0]
    cfg = JitterConfig()
    a = jitter_identity(e, 5, 12, 3, cfg)
    assert a.dtype == np.float32 and a.shape == (512,)
    assert abs(np.linalg.norm(a) - 1) < 1e-5
    assert np.array_equal(a, jitter_identity(e, 5, 12, 3, cfg))
    assert not np.array_equal(a, jitter_identity(e, 5, 12, 4, cfg))
    assert not np.array_equal(a, jitter_identity(e, 6, 12, 3, cfg))
    assert not np.array_equal(a, jitter_identity(e, 5, 13, 3, cfg))
    # a raw (unnormalised) ArcFace vector gives the same result as its unit version
    assert np.allclose(jitter_identity(e * 23.0, 5, 12, 3, cfg), a, atol=1e-6)


def test_sigma_mix_sets_the_similarity():
    e = uniform_vectors(1, 1)[0]
    cfg = JitterConfig()
    cos_by_sigma: dict[float, list[float]] = {}
    for j in range(300):
        sigma = sigma_for(9, 4, j, cfg)
        cos_by_sigma.setdefault(sigma, []).append(float(jitter_identity(e, 9, 4, j, cfg) @ e))
    assert set(cos_by_sigma) == {0.3, 0.5, 0.7}
    assert all(60 < len(v) < 140 for v in cos_by_sigma.values())  # equal weights
    for sigma, values in cos_by_sigma.items():
        assert np.mean(values) == pytest.approx(1 / np.sqrt(1 + sigma**2), abs=0.01)
    assert min(cos_by_sigma[0.7]) >= cfg.min_similarity
    only_small = JitterConfig(weights=[1, 0, 0])
    assert {sigma_for(9, 4, j, only_small) for j in range(50)} == {0.3}


def test_floor_always_holds():
    e = uniform_vectors(2, 1)[0]
    cfg = JitterConfig(sigmas=[3.0], min_similarity=0.8)
    cos = np.array([jitter_identity(e, 1, 1, j, cfg) @ e for j in range(100)])
    assert cos.min() >= 0.8
    assert cos.max() < 0.801  # the big noise was shrunk onto the floor
    off = JitterConfig(enabled=False)
    assert np.allclose(jitter_identity(e, 1, 1, 0, off), e, atol=1e-6)


def test_batch_matches_single_calls():
    embeddings = uniform_vectors(3, 6)
    ids, idx = [0, 0, 1, 2, 5, 5], [0, 1, 0, 7, 2, 3]
    cfg = JitterConfig()
    batch = jitter_identities(embeddings, 42, ids, idx, cfg)
    single = np.stack([jitter_identity(embeddings[b], 42, ids[b], idx[b], cfg) for b in range(6)])
    assert np.array_equal(batch, single)
    assert np.array_equal(jitter_identities(embeddings[2:4], 42, ids[2:4], idx[2:4], cfg), single[2:4])


@pytest.mark.parametrize(
    "override, key",
    [
        ("identity.jitter.weights=[1, 2]", "identity.jitter"),
        ("identity.jitter.min_similarity=0", "identity.jitter.min_similarity"),
        ("identity.jitter.sigmas=[]", "identity.jitter.sigmas"),
        ("identity.jitter.sigmas=[0.3, -1]", "identity.jitter"),
    ],
)
def test_bad_jitter_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_factory_config(None, [override])
