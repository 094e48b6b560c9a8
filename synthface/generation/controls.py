"""Per-candidate controls: the expression vector and the pose control image of each image.

Arc2Face's two extra inputs (docs/generation.md, "Controls"):

- expression: a 55-d FLAME vector (50 expression coefficients, 2 eyelid
  values, 3 jaw values, the order of SMIRK's encoder that the reference code
  uses), fed to the expression adapter;
- pose: a normal-map render of a 3D head, fed to the pose ControlNet.

:class:`ControlSampler` decides both for a candidate from (run seed, identity
id, image index) only, like the image seed, so a candidate's controls do not
depend on the worker, the batch or a rerun. :meth:`ControlSampler.for_candidate`
gives one :class:`CandidateControls` record; :meth:`ControlSampler.generate_kwargs`
turns a batch of records into the generator's keyword arguments. Pool files are
checked when the sampler is built, so a bad pool fails before any image is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthface.errors import InputDataError
from synthface.files import files_sha256, sha256_file
from synthface.generation.config import GenerationConfig
from synthface.seeds import rng

FLAME_DIM = 55
# Slices of the FLAME vector (SMIRK's output order, concatenated as in Arc2Face's demo).
EXPRESSION = slice(0, 50)
EYELID = slice(50, 52)
JAW = slice(52, 55)
POSE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass
class CandidateControls:
    """What, besides the identity vector and the seed, shapes one candidate."""

    expression: np.ndarray | None = None  # float32 [55]
    expression_row: int | None = None  # row of the FLAME pool (pool mode)
    pose_file: str | None = None  # file name inside the pose pool
    _pose_image: Any = field(default=None, repr=False)  # callable -> uint8 [H, W, 3]

    def record(self) -> dict[str, Any]:
        """The sample-json / parquet fields of the controls that are on."""
        out: dict[str, Any] = {}
        if self.expression is not None:
            out["expression"] = [round(float(x), 5) for x in self.expression]
            if self.expression_row is not None:
                out["expression_row"] = self.expression_row
        if self.pose_file is not None:
            out["pose_control"] = self.pose_file
        return out


def load_flame_pool(path: str | Path) -> np.ndarray:
    """An ``.npy`` of FLAME vectors -> float32 [M, 55]; InputDataError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"generation.expression.pool: {path} does not exist (an .npy file of FLAME vectors [M, {FLAME_DIM}])")
    try:
        pool = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputDataError(f"generation.expression.pool: {path} is not a readable .npy array ({exc})") from None
    if pool.ndim != 2 or pool.shape[1] != FLAME_DIM:
        raise InputDataError(
            f"generation.expression.pool: {path} has shape {tuple(pool.shape)}; expected [M, {FLAME_DIM}] FLAME vectors "
            "(50 expression + 2 eyelid + 3 jaw)"
        )
    if len(pool) == 0:
        raise InputDataError(f"generation.expression.pool: {path} holds no rows")
    if not np.issubdtype(pool.dtype, np.floating) or not np.isfinite(pool).all():
        raise InputDataError(f"generation.expression.pool: {path} must hold finite floating-point values")
    return pool.astype(np.float32)


def gaussian_expression(generator: np.random.Generator, expression_std: float, eyelid_std: float, jaw_std: float) -> np.ndarray:
    """One FLAME vector drawn around the neutral face, kept inside the ranges SMIRK's encoder outputs."""
    v = np.zeros(FLAME_DIM, dtype=np.float64)
    v[EXPRESSION] = generator.normal(0.0, expression_std, 50)
    v[EYELID] = np.clip(generator.normal(0.0, eyelid_std, 2), 0.0, 1.0)
    jaw = generator.normal(0.0, jaw_std, 3)
    v[JAW] = [max(jaw[0], 0.0), *np.clip(jaw[1:], -0.2, 0.2)]  # opening >= 0, sideways/forward +-0.2
    return v.astype(np.float32)


def pose_files(folder: Path) -> list[str]:
    """The control images of a pose pool folder, sorted by name (the order candidates pick from)."""
    if not folder.is_dir():
        raise InputDataError(f"generation.pose.pool: {folder} is not a folder of normal-map images")
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in POSE_EXTENSIONS)
    if not files:
        raise InputDataError(f"generation.pose.pool: {folder} holds no {'/'.join(POSE_EXTENSIONS)} images")
    return files


class PosePool:
    """A folder of normal-map control images, all RGB and of the generation size."""

    def __init__(self, folder: str | Path, height: int, width: int):
        from PIL import Image

        self.folder = Path(folder)
        self.files = pose_files(self.folder)
        self.height, self.width = height, width
        for name in self.files:  # headers only: cheap even for a large pool
            path = self.folder / name
            try:
                with Image.open(path) as im:
                    size, mode = im.size, im.mode
            except OSError as exc:
                raise InputDataError(f"generation.pose.pool: {path} is not a readable image ({exc})") from None
            if mode != "RGB":
                raise InputDataError(
                    f"generation.pose.pool: {path} has mode {mode}; control images must be 3-channel RGB normal maps"
                )
            if size != (width, height):
                raise InputDataError(
                    f"generation.pose.pool: {path} is {size[0]}x{size[1]}; control images must match "
                    f"generation.width x height = {width}x{height}"
                )
        self.listing_sha256 = files_sha256(self.folder, self.files, contents=False)  # names and sizes
        self.load = lru_cache(maxsize=256)(self._load)

    def _load(self, name: str) -> np.ndarray:
        from PIL import Image

        with Image.open(self.folder / name) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)


class ControlSampler:
    """Picks each candidate's controls from the ``generation.expression`` / ``generation.pose`` settings."""

    def __init__(self, cfg: GenerationConfig, run_seed: int):
        self.cfg = cfg
        self.run_seed = int(run_seed)
        self.expression_mode = cfg.expression.mode
        self.flame_pool = load_flame_pool(cfg.expression.pool) if self.expression_mode == "pool" else None
        # hashed once: every shard's stats record it (describe)
        self.flame_pool_sha256 = sha256_file(cfg.expression.pool) if self.flame_pool is not None else None
        self.pose_pool = PosePool(cfg.pose.pool, cfg.height, cfg.width) if cfg.pose.mode == "pool" else None

    @property
    def enabled(self) -> bool:
        return self.expression_mode != "off" or self.pose_pool is not None

    def for_candidate(self, identity_id: int, image_index: int) -> CandidateControls:
        out = CandidateControls()
        e = self.cfg.expression
        if self.expression_mode == "neutral":
            out.expression = np.zeros(FLAME_DIM, np.float32)
        elif self.expression_mode == "gaussian":
            g = rng(self.run_seed, identity_id, image_index, purpose="expression")
            out.expression = gaussian_expression(g, e.expression_std, e.eyelid_std, e.jaw_std)
        elif self.expression_mode == "pool":
            row = int(rng(self.run_seed, identity_id, image_index, purpose="expression").integers(len(self.flame_pool)))
            out.expression, out.expression_row = self.flame_pool[row], row
        if self.pose_pool is not None:
            pick = int(rng(self.run_seed, identity_id, image_index, purpose="pose").integers(len(self.pose_pool.files)))
            out.pose_file = self.pose_pool.files[pick]
        return out

    def generate_kwargs(self, batch: Sequence[CandidateControls]) -> dict[str, np.ndarray]:
        """Keyword arguments of ``Arc2FaceGenerator.generate`` for these candidates (empty when all off)."""
        kwargs: dict[str, np.ndarray] = {}
        if self.expression_mode != "off":
            kwargs["expression"] = np.stack([c.expression for c in batch]).astype(np.float32)
        if self.pose_pool is not None:
            kwargs["pose"] = np.stack([self.pose_pool.load(c.pose_file) for c in batch])
        return kwargs

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.expression_mode != "off":
            e = self.cfg.expression
            out["expression"] = {"mode": e.mode, "scale": e.scale}
            if e.mode == "gaussian":
                out["expression"].update(expression_std=e.expression_std, eyelid_std=e.eyelid_std, jaw_std=e.jaw_std)
            if self.flame_pool is not None:
                out["expression"].update(pool=str(e.pool), pool_rows=len(self.flame_pool),
                                         pool_sha256=self.flame_pool_sha256)
        if self.pose_pool is not None:
            out["pose"] = {"pool": str(self.pose_pool.folder), "pool_files": len(self.pose_pool.files),
                           "pool_listing_sha256": self.pose_pool.listing_sha256, "scale": self.cfg.pose.scale}
        return out


def pool_digests(cfg: GenerationConfig) -> dict[str, str]:
    """sha256 of the contents of the control pools ``cfg`` uses ({} when it uses none).

    The run record keeps them, so a resume notices a pool whose files changed at the
    same path (the path alone is in the config hash). The pose pool's digest covers
    each image's name and bytes: it reads the whole pool once, in the driver only.
    """
    out: dict[str, str] = {}
    try:
        if cfg.expression.mode == "pool" and cfg.expression.pool:
            out["expression_pool_sha256"] = sha256_file(cfg.expression.pool)
        if cfg.pose.mode == "pool" and cfg.pose.pool:
            folder = Path(cfg.pose.pool)
            out["pose_pool_sha256"] = files_sha256(folder, pose_files(folder))
    except OSError as exc:  # removed or unreadable since the sampler checked it
        raise InputDataError(f"control pool: cannot read {exc.filename or exc} ({exc.strerror or exc})") from None
    return out


def control_sampler(cfg: GenerationConfig, run_seed: int) -> ControlSampler | None:
    """The sampler for a config, or None when every control is off (today's behaviour)."""
    sampler = ControlSampler(cfg, run_seed)
    return sampler if sampler.enabled else None
