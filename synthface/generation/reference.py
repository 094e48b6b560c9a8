"""Reference mode's per-candidate inputs (``generation.reference``, the Digi2Real route).

Candidate ``k`` of identity ``i`` starts from one of ``i``'s images, chosen from
(run seed, i, k) only, so it does not depend on batch, worker or rerun. Its
identity conditioning is the class vector (as given: the bank vector, jittered
when jitter is on), or, with ``image_embedding_weight`` w > 0, the spherical
interpolation slerp(class vector, the image's own embedding, w).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthface import seeds
from synthface.errors import InputDataError
from synthface.generation.config import ReferenceConfig
from synthface.identity.from_images import ReferenceImages, read_reference_images


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between the directions of ``a`` (t = 0) and ``b`` (t = 1); unit result."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    if t == 0.0:
        return a.astype(np.float32)
    omega = float(np.arccos(np.clip(a @ b, -1.0, 1.0)))
    if omega < 1e-6:  # (nearly) the same direction: the straight line is the arc
        out = (1 - t) * a + t * b
    else:
        out = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    return (out / np.linalg.norm(out)).astype(np.float32)


def reference_index(run_seed: int, identity_id: int, image_index: int, num_images: int) -> int:
    """Which of the identity's ``num_images`` images candidate ``image_index`` starts from."""
    return int(seeds.rng(run_seed, identity_id, image_index, purpose="generation.reference").integers(num_images))


@dataclass
class ReferenceInput:
    vector: np.ndarray  # float32[512] conditioning
    image: np.ndarray  # uint8 H x W x 3
    record: dict  # per-sample metadata: which image, strength, weight


class ReferenceSource:
    """An image bank's images bound to ``generation.reference``."""

    def __init__(self, images: ReferenceImages, cfg: ReferenceConfig):
        self.images = images
        self.cfg = cfg

    @classmethod
    def from_bank(cls, bank_path, cfg: ReferenceConfig) -> "ReferenceSource":
        return cls(read_reference_images(bank_path, cfg.images_root), cfg)

    def __len__(self) -> int:
        return len(self.images.images)

    def candidate(self, run_seed: int, identity_id: int, image_index: int, class_vector: np.ndarray) -> ReferenceInput:
        from synthface.faces.images import read_rgb

        if not 0 <= identity_id < len(self.images.images):
            raise InputDataError(f"generation.reference: the bank lists images for {len(self)} identities, not id {identity_id}")
        names = self.images.images[identity_id]
        k = reference_index(run_seed, identity_id, image_index, len(names))
        vector = np.asarray(class_vector, dtype=np.float32)
        weight = self.cfg.image_embedding_weight
        if weight > 0:
            own = self.images.embeddings[identity_id][k]
            if own.shape != vector.shape:
                raise InputDataError(
                    f"generation.reference.image_embedding_weight: image embeddings are {own.shape[0]}-d, "
                    f"the identity vectors {vector.shape[0]}-d"
                )
            vector = slerp(vector, own, weight)
        image = read_rgb(self.images.path(identity_id, k))  # a file gone since the bank was made: a clear error
        record = {"image": names[k], "strength": float(self.cfg.strength), "image_embedding_weight": float(weight)}
        return ReferenceInput(vector, image, record)
