"""The filter at its defaults on candidate sets built from the 61 real photos."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from synthface.filtering import FilterConfig, IdentityFilter
from synthface.filtering.evaluate import candidate_set_stats
from test_faces_assets import analyze_asset_photos  # the 61 photos, analysed once per session

# photos with a bystander whose face is 50-60% the size of the main one: the
# one-dominant-face rule rejects them on purpose
WITH_BYSTANDERS = {"img59.jpg", "img62.jpg"}


@pytest.fixture(scope="module")
def labelled(assets):
    with open(assets / "faces" / "identities.csv", newline="") as fh:
        identity = {r["image"].split("/")[-1]: int(r["identity"]) for r in csv.DictReader(fh)}
    _, names, _, by_name = analyze_asset_photos(assets)
    results = [by_name[n] for n in names]
    return names, results, np.array([identity[n] for n in names])


def test_bystander_photos_are_the_multiple_faces_ones(labelled):
    names, results, _ = labelled
    cfg = FilterConfig()
    flagged = {n for n, r in zip(names, results) if r.num_faces > 1 and r.second_face_ratio > cfg.max_second_face_ratio}
    assert flagged == WITH_BYSTANDERS


@pytest.mark.parametrize("with_target", [False, True])
def test_defaults_accept_same_person_and_reject_other_person(labelled, with_target):
    names, results, labels = labelled
    stats = candidate_set_stats(results, labels, FilterConfig(), with_target=with_target)
    print("candidate sets", "with target" if with_target else "centre only", stats.as_dict())
    assert stats.impostors_total > 500
    assert stats.impostor_rejection == 1.0
    # every same-person image is accepted, except the two bystander photos (multiple_faces)
    assert set(stats.same_rejected_reasons) <= {"multiple_faces"}
    assert stats.same_acceptance > 0.95


def test_defaults_flag_a_person_split_in_two_classes_and_not_different_people(labelled):
    _, results, labels = labelled
    emb = np.stack([r.embedding for r in results])
    f = IdentityFilter(FilterConfig())
    people = np.unique(labels)
    centres = np.stack([emb[labels == p].mean(axis=0) for p in people])
    assert f.inter_class(people, centres) == {}  # 13 different people: no duplicates
    # a person's images split over two class ids is caught
    own = np.flatnonzero(labels == 0)
    halves = np.stack([emb[own[::2]].mean(axis=0), emb[own[1::2]].mean(axis=0)])
    assert f.inter_class([100, 101], halves) == {101: "inter_class_duplicate"}
