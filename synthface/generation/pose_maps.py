"""A stand-in pose pool: normal maps of a simple 3D head at chosen angles (numpy only).

Arc2Face's pose ControlNet was trained on normal maps that EMOCA renders from a
FLAME face fitted to a photo (docs/generation.md, "Making a pose pool"). This
module draws something of the same kind without EMOCA: a head-shaped ellipsoid
with a nose, ray-cast orthographically, its surface normal stored per pixel as
RGB = (n * 0.5 + 0.5) * 255 with x to the image right, y up and z towards the
camera (background: the zero normal, mid-grey). It carries the head's
orientation and outline, none of a real face's shape; it is what the demo and
the tests use, and a starting point, not a replacement for EMOCA renders
(whether the real ControlNet follows it is not measured).

Angles in degrees, the convention of :mod:`synthface.faces.head_pose`: yaw > 0
turns the face towards the image's right, pitch > 0 tilts it up, roll > 0
rotates it counter-clockwise in the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# (centre, semi-axes) in image units ([-1, 1] across the picture), head frame
HEAD = (np.array([0.0, 0.02, 0.0]), np.array([0.60, 0.78, 0.62]))
NOSE = (np.array([0.0, -0.08, 0.50]), np.array([0.13, 0.24, 0.24]))


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head-to-camera rotation: roll about z, then pitch about x, then yaw about y (degrees)."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])  # pitch > 0: nose up
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def render_normal_map(size: int, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """uint8 [size, size, 3] normal map of the stand-in head at these angles."""
    rot = rotation(yaw, pitch, roll)
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    xs, ys = np.meshgrid(coords, -coords)  # image rows go down, y goes up
    origin = np.stack([xs, ys, np.full_like(xs, 4.0)], -1).reshape(-1, 3)  # camera side, looking along -z
    direction = rot.T @ np.array([0.0, 0.0, -1.0])  # the ray in the head frame
    origin_h = origin @ rot  # = rot.T @ each origin
    best_t = np.full(len(origin), np.inf)
    normal_h = np.zeros_like(origin)
    for centre, axes in (HEAD, NOSE):
        o = (origin_h - centre) / axes
        d = direction / axes
        a = d @ d
        b = 2 * o @ d
        c = (o * o).sum(1) - 1
        disc = b * b - 4 * a * c
        hit = disc >= 0
        t = np.where(hit, (-b - np.sqrt(np.where(hit, disc, 0))) / (2 * a), np.inf)
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        point = origin_h + np.where(hit, t, 0.0)[:, None] * direction
        n = (point - centre) / axes**2
        normal_h = np.where(closer[:, None], n, normal_h)
    normal = normal_h @ rot.T  # back to the camera frame
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = np.where(np.isfinite(best_t)[:, None], normal / np.maximum(length, 1e-12), 0.0)
    rgb = np.round((normal * 0.5 + 0.5) * 255).clip(0, 255).astype(np.uint8)
    return rgb.reshape(size, size, 3)


def write_pose_pool(folder: str | Path, count: int, size: int, seed: int = 0, yaw_max: float = 60.0,
                    pitch_max: float = 20.0, roll_max: float = 10.0) -> list[Path]:
    """Write ``count`` PNG normal maps with uniform random angles; names carry the angles."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    angles = np.random.default_rng(seed).uniform(-1, 1, (count, 3)) * [yaw_max, pitch_max, roll_max]
    paths = []
    for i, (yaw, pitch, roll) in enumerate(angles):
        path = folder / f"pose_{i:05d}_y{yaw:+06.1f}_p{pitch:+05.1f}_r{roll:+05.1f}.png"
        Image.fromarray(render_normal_map(size, yaw, pitch, roll)).save(path)
        paths.append(path)
    return paths
