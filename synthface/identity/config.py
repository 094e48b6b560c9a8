"""Config of the identity bank stage (`identity:` section of the factory config).

Defaults are the production defaults. What each setting trades is written up
in docs/identity.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synthface.config import Cosine, StrictModel

EMBEDDING_DIM = 512  # the ArcFace identity space Arc2Face is conditioned on


class JitterConfig(StrictModel):
    """Intra-class condition jitter: each image of an identity is generated from
    a slightly perturbed copy of the identity vector."""

    sigmas: list[float] = Field(
        [0.3, 0.5, 0.7],
        min_length=1,
        description="Noise scales mixed per image (Vec2Face-style); the noise norm relative to the unit identity vector.",
    )
    weights: list[float] | None = Field(
        None, description="Probability of each sigma (normalised); null = equal."
    )
    min_similarity: float = Field(
        0.7, gt=0.0, le=1.0, description="Floor on cosine(jittered, identity); larger noise is shrunk to meet it."
    )
    enabled: bool = Field(True, description="false = every image uses the identity vector itself.")

    @model_validator(mode="after")
    def _check_lists(self) -> "JitterConfig":
        if any(s < 0 for s in self.sigmas):
            raise ValueError("jitter.sigmas must all be >= 0")
        if self.weights is not None:
            if len(self.weights) != len(self.sigmas):
                raise ValueError(
                    f"jitter.weights has {len(self.weights)} entries but jitter.sigmas has {len(self.sigmas)}"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("jitter.weights must be >= 0 with a positive sum")
        return self


class PackedConfig(StrictModel):
    """HyperFace-style packing: push identities apart (maximise the minimum
    pairwise angle), optionally pulled towards a gallery of real embeddings."""

    start: Literal["uniform", "code"] = Field(
        "uniform",
        description="uniform = uniform start, then the optimisation below (N^2 neighbour passes); "
        "code = an algebraic spherical code (BCH dual / Gold), separated by construction "
        "(max cosine 1/16 up to 131,072 identities, 1/8 up to 67M) in O(N), no optimisation: "
        "the choice for very large banks. Not with gallery_weight > 0.",
    )

    rounds: int = Field(
        1, ge=1, le=50, description="Neighbour-list rebuilds; each is one exact all-pairs pass (the cost that grows as N^2)."
    )
    steps: int = Field(100, ge=0, le=100_000, description="Optimisation steps per round.")
    neighbours: int = Field(
        16, ge=1, le=512, description="Nearest neighbours each identity is pushed away from."
    )
    sharpness: float = Field(
        800.0,
        gt=0,
        le=10_000,
        description="How strongly the push concentrates on the closest pairs (soft-max temperature on cosine).",
    )
    step_size: float = Field(
        0.002,
        gt=0,
        le=0.5,
        description="Move per step (radians) of a row pushed by one neighbour at the bank's max cosine; "
        "rows with several near-max neighbours move up to that many times further. Decays to zero over the run.",
    )
    check_every: int = Field(
        10, ge=1, le=10_000, description="Steps between re-scoring all neighbour pairs to pick the rows that move."
    )
    gallery_weight: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Pull towards the nearest identity.gallery embedding (the face manifold); 0 = off.",
    )
    block_size: int = Field(4096, ge=64, le=65_536, description="Rows per block in the all-pairs passes (memory).")


class GallerySamplerConfig(StrictModel):
    """New identities drawn around gallery embeddings, inside a cosine band."""

    method: Literal["vmf", "gaussian"] = Field(
        "vmf", description="von Mises-Fisher around the anchor, or Gaussian noise + renormalise."
    )
    min_similarity: Cosine = Field(0.2, description="Lowest cosine to the anchor kept.")
    max_similarity: Cosine = Field(0.35, description="Highest cosine to the anchor kept.")
    concentration: float | None = Field(
        None, gt=0, description="vMF kappa; null = the kappa whose mode is the band centre."
    )
    sigma: float | None = Field(
        None, gt=0, description="Gaussian noise norm relative to the anchor; null = centred on the band."
    )
    max_draws: int = Field(50, ge=1, le=10_000, description="Draws per identity before giving up on the band.")

    @model_validator(mode="after")
    def _band(self) -> "GallerySamplerConfig":
        if self.min_similarity >= self.max_similarity:
            raise ValueError(
                f"gallery_sampler.min_similarity ({self.min_similarity}) must be below "
                f"gallery_sampler.max_similarity ({self.max_similarity})"
            )
        return self


class ScreenConfig(StrictModel):
    """Screens applied to every sampler; offenders are rejected and resampled."""

    max_pair_similarity: Cosine | None = Field(
        0.4, description="Minimum separation: no two identities above this cosine; null = off."
    )
    novelty_gallery: str | None = Field(
        None, description="Real-identity embeddings (.npy or .parquet) that new identities must not resemble."
    )
    max_gallery_similarity: Cosine = Field(
        0.4, description="Novelty: no identity above this cosine to any novelty_gallery embedding."
    )
    max_rounds: int = Field(20, ge=0, le=1000, description="Reject/resample rounds before giving up with an error.")


class FromImagesConfig(StrictModel):
    """`synthface ids from-images DIR`: identities taken from a folder per identity
    (e.g. DigiFace-style renders) instead of sampled."""

    min_images: int = Field(
        2, ge=1, le=10_000, description="Identities left with fewer embedded images than this are dropped (and reported)."
    )
    det_size: int = Field(
        640, ge=32, le=2048, multiple_of=32,
        description="Detector input size for these images (photos and renders: faces can be small, so 640 like embed-gallery).",
    )


class IdentityConfig(StrictModel):
    """How identities are sampled and screened."""

    num_identities: int = Field(10_000, ge=1, le=10_000_000, description="Identities in the bank (ids 0..N-1).")
    sampler: Literal["uniform", "packed", "gallery"] = Field("packed", description="How identity vectors are drawn.")
    gallery: str | None = Field(
        None,
        description="Reference embeddings (.npy or .parquet): the packed regulariser and the gallery sampler use them.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when present.")
    packed: PackedConfig = Field(default_factory=PackedConfig)
    gallery_sampler: GallerySamplerConfig = Field(default_factory=GallerySamplerConfig)
    screen: ScreenConfig = Field(default_factory=ScreenConfig)
    jitter: JitterConfig = Field(default_factory=JitterConfig)
    from_images: FromImagesConfig = Field(default_factory=FromImagesConfig)

    @model_validator(mode="after")
    def _needs_gallery(self) -> "IdentityConfig":
        if self.gallery is None:
            if self.sampler == "gallery":
                raise ValueError("sampler 'gallery' needs identity.gallery (a .npy or .parquet of embeddings)")
            if self.sampler == "packed" and self.packed.gallery_weight > 0:
                raise ValueError("packed.gallery_weight > 0 needs identity.gallery (a .npy or .parquet of embeddings)")
        if self.sampler == "packed" and self.packed.start == "code" and self.packed.gallery_weight > 0:
            raise ValueError(
                "packed.start 'code' places identities by construction and cannot follow packed.gallery_weight; "
                "use packed.start 'uniform' for the gallery pull"
            )
        return self
