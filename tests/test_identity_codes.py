"""packed.start = code: algebraic spherical codes, separated by construction."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from synthface.errors import ConfigError
from synthface.identity import codes
from synthface.identity.bank import sample_bank
from synthface.identity.config import IdentityConfig
from synthface.neighbours import nearest_neighbour


def _cosines(v):
    s = v @ v.T
    np.fill_diagonal(s, np.nan)
    return s


@pytest.mark.parametrize("family", [codes.GOLD, codes.KASAMI])
def test_code_vectors_are_unit_and_keep_the_families_cosine_bound(family):
    code = codes.seeded_code(5, family)
    g = codes.generator_matrix(family)
    assert g.shape == (family.message_bits, 512) and codes._gf2_rank(code.generator) == family.message_bits
    messages = np.random.default_rng(0).choice(family.capacity, 1500, replace=False)
    v = codes.code_vectors(code, messages)
    assert v.dtype == np.float32 and v.shape == (1500, 512)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    s = _cosines(v)
    # every cosine is a multiple of 1/16 (the Walsh spectrum), at most the family's maximum
    np.testing.assert_allclose(np.round(s[~np.isnan(s)] * 16), s[~np.isnan(s)] * 16, atol=1e-4)
    assert np.nanmax(s) == pytest.approx(family.max_cosine, abs=1e-5)
    # the rotation leaves no trace of the +-1 hypercube: coordinates are not all +-1/sqrt(512)
    assert np.abs(np.abs(v) - 1 / np.sqrt(512)).max() > 0.05


def test_code_is_seeded_and_identity_i_does_not_depend_on_n():
    a = codes.code_vectors(codes.seeded_code(1, codes.GOLD), np.arange(300))
    assert np.array_equal(a, codes.code_vectors(codes.seeded_code(1, codes.GOLD), np.arange(300)))
    assert np.array_equal(a[:40], codes.code_vectors(codes.seeded_code(1, codes.GOLD), np.arange(40)))
    assert not np.allclose(a, codes.code_vectors(codes.seeded_code(2, codes.GOLD), np.arange(300)))
    assert codes.family_for(131_072) is codes.GOLD and codes.family_for(131_073) is codes.KASAMI
    with pytest.raises(ConfigError, match="at most"):
        codes.family_for(70_000_000)


def test_nearest_by_bound_hits_are_exact_nearest_neighbours():
    code = codes.seeded_code(3, codes.KASAMI)
    messages = np.arange(4000)
    v = codes.code_vectors(code, messages)
    nn = codes.nearest_by_bound(code, messages)
    found = nn >= 0
    assert found.mean() > 0.9
    s = _cosines(v)
    best = np.nanmax(s, axis=1)
    np.testing.assert_allclose(np.einsum("ij,ij->i", v[found], v[nn[found]]), best[found], atol=1e-5)


def test_code_bank_is_separated_with_exact_nn_columns_and_redraws_codewords(tmp_path):
    gallery = codes.code_vectors(codes.seeded_code(99, codes.GOLD), np.arange(50))  # stand-in real gallery
    np.save(tmp_path / "gallery.npy", gallery)
    cfg = IdentityConfig(
        num_identities=600,
        sampler="packed",
        packed={"start": "code"},
        screen={"novelty_gallery": str(tmp_path / "gallery.npy"), "max_gallery_similarity": 0.12},
    )
    bank, report = sample_bank(cfg, 4)
    x = bank.embeddings
    assert report.packing is None and report.screen["rejected_novelty"] > 0  # some were redrawn
    want_cos, _ = nearest_neighbour(x)
    np.testing.assert_allclose(bank.column("nn_cosine"), want_cos, atol=1e-5)
    got_id = bank.column("nn_id")
    np.testing.assert_allclose(np.einsum("ij,ij->i", x, x[got_id]), want_cos, atol=1e-5)
    assert want_cos.max() <= codes.GOLD.max_cosine + 1e-5
    assert (x @ gallery.T).max() <= 0.12 + 1e-6
    assert bank.metadata["code"]["family"] == "gold" and bank.metadata["code"]["messages_used"] > 600
    again, _ = sample_bank(cfg, 4)
    assert np.array_equal(again.embeddings, x)


def test_code_start_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="identity.screen.max_pair_similarity=0.05"):
        sample_bank(IdentityConfig(num_identities=100, packed={"start": "code"}, screen={"max_pair_similarity": 0.05}), 0)
    with pytest.raises(ValidationError, match="gallery_weight"):
        IdentityConfig(packed={"start": "code", "gallery_weight": 1.0}, gallery="g.npy")
