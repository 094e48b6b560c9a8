"""Head pose from 5 landmarks: exact on synthetic projections, consistent on the real photos."""

from __future__ import annotations

import numpy as np
import pytest

from synthface.faces.head_pose import FACE_MODEL_5, estimate_head_pose

W, H = 640, 480


def rot(yaw, pitch, roll):
    """Object-to-camera rotation (OpenCV axes) for angles in the module's convention."""
    a, b, c = np.radians([-yaw, -pitch, -roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return ry @ rx @ rz


def project(yaw, pitch, roll, distance=600.0, shift=(20.0, -10.0)):
    cam = (FACE_MODEL_5 - FACE_MODEL_5.mean(0)) @ rot(yaw, pitch, roll).T + [shift[0], shift[1], distance]
    return np.stack([W * cam[:, 0] / cam[:, 2] + W / 2, W * cam[:, 1] / cam[:, 2] + H / 2], 1)


def mirror(points):
    m = points.copy()
    m[:, 0] = W - m[:, 0]
    return m[[1, 0, 2, 4, 3]]  # image-left and image-right swap roles


@pytest.mark.parametrize("angles", [(0, 0, 0), (30, 0, 0), (-45, 10, 5), (10, -15, -20), (55, 5, 0)])
def test_recovers_known_angles_of_the_model_face(angles):
    got = estimate_head_pose(project(*angles), (H, W))
    assert np.allclose(got, angles, atol=0.5), got


def test_signs_read_as_documented():
    right = project(30, 0, 0)
    assert right[2, 0] > right[:2, 0].mean()  # yaw > 0: the nose is right of the eyes' midpoint
    up = project(0, 20, 0)
    assert up[2, 1] < project(0, 0, 0)[2, 1]  # pitch > 0: the nose moves up in the image
    ccw = project(0, 0, 20)
    assert ccw[1, 1] < ccw[0, 1]  # roll > 0 (counter-clockwise): the image-right eye is higher


@pytest.mark.parametrize("angles", [(25, 5, 8), (-40, -10, 3)])
def test_mirror_negates_yaw_and_roll(angles):
    yaw, pitch, roll = estimate_head_pose(project(*angles), (H, W))
    myaw, mpitch, mroll = estimate_head_pose(mirror(project(*angles)), (H, W))
    assert myaw == pytest.approx(-yaw, abs=0.5) and mroll == pytest.approx(-roll, abs=0.5)
    assert mpitch == pytest.approx(pitch, abs=0.5)


def test_unusable_landmarks_give_none():
    assert estimate_head_pose(None, (H, W)) is None
    assert estimate_head_pose(np.zeros((5, 2)), (H, W)) is None  # both eyes on one point
    assert estimate_head_pose(np.full((5, 2), np.nan), (H, W)) is None
    assert estimate_head_pose(np.zeros((4, 2)), (H, W)) is None


def test_real_photos_mirror_consistent_and_mostly_frontal(assets):
    """The 61 shared photos and their mirror images: yaw flips sign, the photos are mostly frontal,
    and two photos whose direction is plain to see get the right sign."""
    from test_faces_assets import analyze_asset_photos

    analyzer, names, images, results = analyze_asset_photos(assets)
    mirrored = analyzer.analyze([np.ascontiguousarray(im[:, ::-1]) for im in images])
    pairs = [(n, results[n].head_pose, m.head_pose) for n, m in zip(names, mirrored)]
    assert all(p is not None and q is not None for _, p, q in pairs)
    poses = np.array([p for _, p, _ in pairs])
    flipped = np.array([q for _, _, q in pairs])
    assert np.median(np.abs(poses[:, 0] + flipped[:, 0])) < 3  # measured 1.7 deg
    assert np.corrcoef(poses[:, 0], -flipped[:, 0])[0, 1] > 0.9  # measured 0.95
    assert np.median(np.abs(poses[:, 2] + flipped[:, 2])) < 2  # roll flips too
    assert np.median(np.abs(poses[:, 0])) < 10  # mostly frontal photos (measured median |yaw| 4.1)
    by_name = dict(zip(names, poses))
    assert by_name["img59.jpg"][0] < -15  # looks towards the image's left (measured -28)
    assert by_name["img58.jpg"][0] > 10  # turned towards the image's right (measured +22)
