"""IdentityFilter on constructed embeddings: every rule, every reason."""

from __future__ import annotations

import numpy as np
import pytest

from synthface.errors import ConfigError
from synthface.faces.analyzer import FaceResult
from synthface.filtering import FilterConfig, IdentityFilter

DIM = 64


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def around(centre, sim, rng):
    """A unit vector with cosine ``sim`` to ``centre``."""
    noise = rng.normal(size=centre.shape).astype(np.float32)
    noise -= (noise @ centre) * centre
    noise = unit(noise)
    return unit(sim * centre + np.sqrt(1 - sim**2) * noise)


def face(embedding, score=0.9, num_faces=1, second=0.0):
    return FaceResult(ok=True, det_score=score, num_faces=num_faces, second_face_ratio=second,
                      embedding=np.asarray(embedding, np.float32))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def person(rng, n, sim=0.8):
    centre = unit(rng.normal(size=DIM))
    return centre, [face(around(centre, sim, rng)) for _ in range(n)]


def test_same_person_class_is_kept_and_an_impostor_rejected(rng):
    centre, images = person(rng, 8)
    _, other = person(rng, 1)
    decision = IdentityFilter(FilterConfig()).filter_class(centre, images + other)
    assert decision.kept and decision.reason is None
    assert [d.accepted for d in decision.images] == [True] * 8 + [False]
    assert decision.images[-1].reason in ("low_target_sim", "low_intra_sim")
    assert decision.num_accepted == 8
    assert abs(np.linalg.norm(decision.centre) - 1) < 1e-5 and decision.centre @ centre > 0.9
    for d in decision.images[:8]:
        assert d.sim_target > 0.7 and d.sim_centre > 0.5


def test_every_face_level_reason(rng):
    centre, images = person(rng, 6)
    results = images + [
        FaceResult(ok=False, reason="no_face"),
        FaceResult(ok=False, reason="bad_image", detail="grey"),
        face(around(centre, 0.8, rng), score=0.3),
        face(around(centre, 0.8, rng), num_faces=2, second=0.9),
        face(around(centre, 0.8, rng), num_faces=2, second=0.05),  # a tiny background face is fine
    ]
    decision = IdentityFilter().filter_class(centre, results)
    reasons = [d.reason for d in decision.images[6:]]
    assert reasons == ["no_face", "bad_image", "low_det_score", "multiple_faces", None]
    assert decision.images[-1].accepted


def test_target_rule_only_with_use_target(rng):
    centre, images = person(rng, 6)
    wrong_target = unit(rng.normal(size=DIM))
    with_target = IdentityFilter(FilterConfig()).filter_class(wrong_target, images)
    assert not with_target.kept and {d.reason for d in with_target.images} == {"low_target_sim"}
    assert with_target.reason == "class_too_small" and with_target.centre is None
    without = IdentityFilter(FilterConfig(use_target=False)).filter_class(wrong_target, images)
    assert without.kept and all(d.accepted for d in without.images)
    assert all(d.sim_target is not None for d in without.images)  # still measured, for the metadata
    no_target = IdentityFilter(FilterConfig()).filter_class(None, images)
    assert no_target.kept and all(d.sim_target is None for d in no_target.images)


def test_target_of_another_dimension_is_a_config_error(rng):
    _, images = person(rng, 3)
    with pytest.raises(ConfigError, match="filter.use_target"):
        IdentityFilter().filter_class(np.ones(512, np.float32), images)
    ignored = IdentityFilter(FilterConfig(use_target=False)).filter_class(np.ones(512, np.float32), images)
    assert all(d.sim_target is None for d in ignored.images)


@pytest.mark.parametrize("centre_kind", ["mean", "medoid"])
def test_intra_rule_finds_the_outliers_without_a_target(rng, centre_kind):
    _, images = person(rng, 7, sim=0.85)
    _, strangers = person(rng, 2, sim=0.85)  # two images of one other person support each other
    decision = IdentityFilter(FilterConfig(centre=centre_kind)).filter_class(None, images + strangers)
    assert [d.accepted for d in decision.images] == [True] * 7 + [False, False]
    assert {d.reason for d in decision.images[7:]} == {"low_intra_sim"}
    assert all(d.sim_centre < 0.5 for d in decision.images[7:])


def test_leave_one_out_keeps_an_impostor_from_voting_for_itself(rng):
    # two genuine images and one impostor: the impostor is compared with the centre of the
    # other two (~0), not with a centre it is part of (~0.47 here)
    centre, images = person(rng, 2, sim=0.9)
    _, other = person(rng, 1)
    decision = IdentityFilter(FilterConfig(min_images=1)).filter_class(None, images + other)
    assert not decision.images[2].accepted and decision.images[2].sim_centre < 0.3


def test_class_too_small(rng):
    centre, images = person(rng, 4)
    cfg = FilterConfig(min_images=5)
    decision = IdentityFilter(cfg).filter_class(centre, images)
    assert not decision.kept and decision.reason == "class_too_small"
    assert all(d.accepted for d in decision.images)  # the images themselves passed
    assert IdentityFilter(FilterConfig(min_images=4)).filter_class(centre, images).kept


def test_no_agreeing_images_accepts_nothing(rng):
    images = [face(unit(rng.normal(size=DIM))) for _ in range(5)]  # five strangers
    decision = IdentityFilter(FilterConfig(min_images=1)).filter_class(None, images)
    assert not decision.kept and decision.num_accepted == 0 and decision.centre is None
    assert {d.reason for d in decision.images} == {"low_intra_sim"}


def test_empty_and_all_failed_classes():
    f = IdentityFilter()
    empty = f.filter_class(None, [])
    assert not empty.kept and empty.images == [] and empty.reason == "class_too_small"
    failed = f.filter_class(None, [FaceResult(ok=False, reason="no_face")] * 3)
    assert [d.reason for d in failed.images] == ["no_face"] * 3 and not failed.kept


def test_inter_class_flags_the_later_of_a_close_pair(rng):
    a, b, c = (unit(rng.normal(size=DIM)) for _ in range(3))
    near_a = around(a, 0.8, rng)
    f = IdentityFilter(FilterConfig(tau_inter=0.6))
    assert f.inter_class([10, 11, 12, 13], np.stack([a, b, near_a, c])) == {12: "inter_class_duplicate"}
    # the order the classes come in does not matter: the lower id stays
    assert f.inter_class([12, 13, 10, 11], np.stack([near_a, c, a, b])) == {12: "inter_class_duplicate"}
    assert f.inter_class_matches([10, 12], np.stack([a, near_a]))[12][0] == 10
    assert f.inter_class([1], a[None]) == {}
    assert f.drops_inter_duplicates and not IdentityFilter(FilterConfig(inter_action="flag")).drops_inter_duplicates


def test_inter_class_chain_is_judged_against_survivors_only(rng):
    a = unit(rng.normal(size=DIM))
    b = around(a, 0.7, rng)  # duplicate of a
    c = around(b, 0.7, rng)  # close to b, which is dropped, but maybe not to a
    f = IdentityFilter(FilterConfig(tau_inter=0.65))
    flagged = f.inter_class([0, 1, 2], np.stack([a, b, c]))
    assert 1 in flagged
    assert (2 in flagged) == bool(c @ a >= 0.65)


def test_filter_config_errors_name_the_key():
    from pipelines.config import load_factory_config

    with pytest.raises(ConfigError, match="filter.tau_intra"):
        load_factory_config(None, ["filter.tau_intra=2"])
    with pytest.raises(ConfigError, match="filter.centre"):
        load_factory_config(None, ["filter.centre=median"])
    with pytest.raises(ConfigError, match="filter.inter_action"):
        load_factory_config(None, ["filter.inter_action=delete"])


def test_pair_stats_reads_the_threshold_band():
    from synthface.filtering.evaluate import pair_stats

    sims = np.array([0.9, 0.7, 0.5, 0.3, 0.2, 0.1])
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    stats = pair_stats(sims, same, threshold=0.4)
    assert stats["auc"] == 1.0 and stats["best_accuracy"] == 1.0
    assert stats["best_threshold_range"] == [0.3, 0.5]  # any t in (0.3, 0.5] separates them
    assert stats["same_min"] == 0.5 and stats["diff_max"] == 0.3
    assert stats["accuracy_at_threshold"] == 1.0
    assert pair_stats(sims, same, threshold=0.6)["accuracy_at_threshold"] == 5 / 6


def test_centre_stats_on_constructed_people(rng):
    from synthface.filtering.evaluate import centre_stats

    a, b = unit(rng.normal(size=DIM)), unit(rng.normal(size=DIM))
    emb = np.stack([around(a, 0.9, rng) for _ in range(4)] + [around(b, 0.9, rng) for _ in range(4)])
    stats = centre_stats(emb, [0] * 4 + [1] * 4)
    assert stats["people"] == 2 and stats["people_split"] == 2
    assert stats["different_person_centre_max"] < 0.5 < 0.8 < stats["same_person_split_centre_min"]


@pytest.mark.parametrize("max_iterations", [1, 5])
def test_every_accepted_image_passes_against_the_reported_centre(max_iterations):
    """Also when the centre estimate has not settled within max_iterations (two overlapping
    sub-clusters make images move in and out): no accepted image below tau_intra."""
    cfg = FilterConfig(use_target=False, tau_intra=0.5, max_iterations=max_iterations)
    for seed in range(60):
        rng = np.random.default_rng(seed)
        a = unit(rng.normal(size=DIM))
        b = around(a, 0.5, rng)
        images = [face(around(a, rng.uniform(0.4, 0.9), rng)) for _ in range(6)]
        images += [face(around(b, rng.uniform(0.4, 0.9), rng)) for _ in range(4)]
        decision = IdentityFilter(cfg).filter_class(None, images)
        low = [d.sim_centre for d in decision.images if d.accepted and (d.sim_centre or 1.0) < cfg.tau_intra]
        assert not low, (seed, low)
