"""Head pose (yaw, pitch, roll) from the detector's 5 landmarks.

A generic 3D face (the five points of an average adult face, in mm) is fitted
to the landmarks with OpenCV's solvePnP (Levenberg-Marquardt from a frontal
start), a pinhole camera whose focal length is the image width and whose
centre is the image centre. Five points, one of them (the nose tip) off the
eye/mouth plane, fix the rotation well for yaw and roll; pitch depends on the
generic depths chosen below, so read it as relative (between images), not as
absolute degrees. Beyond about 60 degrees of yaw the far eye is hidden and
detectors' landmarks, and so this estimate, degrade.

Convention (degrees): yaw > 0 when the face turns towards the image's right
(the nose moves right), pitch > 0 when it tilts up, roll > 0 when it rotates
counter-clockwise in the image. A mirrored image gives the negated yaw and
roll and the same pitch (tested).
"""

from __future__ import annotations

import numpy as np

# The 5 points in SCRFD's order (image-left eye, image-right eye, nose tip,
# image-left and image-right mouth corner), in an object frame with x to the
# right, y down and z away from the camera (OpenCV's camera axes for a frontal
# face): the nose tip is the nearest point, the eyes about 3 cm behind it.
FACE_MODEL_5 = np.array(
    [
        [-32.0, -35.0, 30.0],
        [32.0, -35.0, 30.0],
        [0.0, 0.0, 0.0],
        [-25.0, 30.0, 22.0],
        [25.0, 30.0, 22.0],
    ],
    dtype=np.float64,
)


def euler_from_rotation(rot: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees, in this module's convention, from an object-to-camera rotation.

    ``rot = Ry(a) @ Rx(b) @ Rz(c)`` in OpenCV's camera axes; the signs are
    flipped so that the angles read as the module docstring says.
    """
    b = np.arcsin(np.clip(-rot[1, 2], -1.0, 1.0))
    a = np.arctan2(rot[0, 2], rot[2, 2])
    c = np.arctan2(rot[1, 0], rot[1, 1])
    return float(-np.degrees(a)), float(-np.degrees(b)), float(-np.degrees(c))


def estimate_head_pose(landmarks, image_hw: tuple[int, int]) -> tuple[float, float, float] | None:
    """(yaw, pitch, roll) in degrees for 5 landmarks [5, 2] (pixels) in an image of ``image_hw``; None when unfit."""
    import cv2

    if landmarks is None:
        return None
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        return None
    height, width = int(image_hw[0]), int(image_hw[1])
    focal = float(width)
    camera = np.array([[focal, 0, width / 2.0], [0, focal, height / 2.0], [0, 0, 1]], dtype=np.float64)
    eye_px = np.linalg.norm(points[1] - points[0])
    if eye_px < 1e-6:
        return None
    eye_mm = np.linalg.norm(FACE_MODEL_5[1] - FACE_MODEL_5[0])
    # frontal start at the distance that gives the observed eye spacing
    rvec = np.zeros((3, 1))
    centre = points.mean(axis=0)
    depth = focal * eye_mm / eye_px
    tvec = np.array([[(centre[0] - width / 2) * depth / focal], [(centre[1] - height / 2) * depth / focal], [depth]])
    ok, rvec, tvec = cv2.solvePnP(
        FACE_MODEL_5, points.reshape(5, 1, 2), camera, None, rvec, tvec, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE
    )
    if not ok or not np.isfinite(rvec).all():
        return None
    rot, _ = cv2.Rodrigues(rvec)
    return euler_from_rotation(rot)
