"""Screens: separation and novelty reject, resample, report counts."""

from __future__ import annotations

import numpy as np
import pytest

from synthface.errors import ConfigError
from synthface.identity.config import ScreenConfig
from synthface.identity.samplers import normalise, redraw_uniform, uniform_vectors
from synthface.identity.screens import screen


def _brute_nn(x):
    s = x @ x.T
    np.fill_diagonal(s, -2)
    return s.max(1), s.argmax(1)


def _redraw(ids, screen_round):
    return redraw_uniform(11, ids, screen_round)


def test_separation_screen_rejects_the_higher_id_and_resamples():
    x = uniform_vectors(0, 300)
    x[150] = x[20]  # duplicate
    x[200] = normalise(x[30] + 0.05 * uniform_vectors(1, 1)[0])  # near-duplicate
    out = screen(x, ScreenConfig(max_pair_similarity=0.5), _redraw)
    assert out.report.rejected_separation == 2 and out.report.resampled == 2
    assert out.report.rounds == 1 and out.report.rejected_novelty == 0
    assert list(out.report.resampled_ids) == [150, 200]
    assert np.array_equal(out.embeddings[20], x[20]) and np.array_equal(out.embeddings[30], x[30])
    assert not np.array_equal(out.embeddings[150], x[150])
    sims, idx = _brute_nn(out.embeddings)
    assert sims.max() <= 0.5
    np.testing.assert_allclose(out.nn_cosine, sims, atol=1e-5)  # updated without a full pass, still exact
    assert np.array_equal(out.nn_id, idx)


def test_novelty_screen_against_a_real_gallery():
    x = uniform_vectors(0, 200)
    gallery = uniform_vectors(50, 100)
    x[7] = normalise(gallery[3] + 0.3 * uniform_vectors(2, 1)[0])
    x[9] = normalise(gallery[60] + 0.3 * uniform_vectors(3, 1)[0])
    out = screen(x, ScreenConfig(max_gallery_similarity=0.5), _redraw, novelty_gallery=gallery)
    assert out.report.rejected_novelty == 2 and out.report.resampled == 2
    assert out.gallery_cosine.max() <= 0.5
    np.testing.assert_allclose(out.gallery_cosine, (out.embeddings @ gallery.T).max(1), atol=1e-5)


def test_screen_off_reports_nothing_and_keeps_vectors():
    x = uniform_vectors(0, 100)
    x[5] = x[6]
    out = screen(x, ScreenConfig(max_pair_similarity=None), _redraw)
    assert out.report.resampled == 0 and np.array_equal(out.embeddings, x)
    assert out.nn_cosine[5] == pytest.approx(1.0, abs=1e-5)
    assert out.gallery_cosine is None


def test_impossible_screen_names_the_key():
    x = uniform_vectors(0, 300)
    with pytest.raises(ConfigError, match=r"identity\.screen\.max_pair_similarity=0\.05"):
        screen(x, ScreenConfig(max_pair_similarity=0.05, max_rounds=3), _redraw)
