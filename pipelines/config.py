"""The factory's config, read by the pipelines: one YAML file with one section per stage.

``FactoryConfig`` composes each stage's section (``identity``, ``generation``,
``faces``, ``filter``) with the ``run:`` section defined here, which only the
pipelines read. Every command that reads a factory config (``ids sample``,
``sample``, ``generate``, ``config``) loads it with :func:`load_factory_config`,
so one file (e.g. ``configs/arc2face.yaml``) drives the whole run.

Two kinds of ``run:`` keys: keys that shape the dataset (``bank``,
``ids_per_shard``, ``images_per_id``, ``groups``, the top-up keys, ``max_ids``,
``inter_class``, the image options) are part of the run's identity: resuming
with different values is refused. Keys that only shape the execution (workers,
GPUs, retries, logging) may change between a run and its resume;
:data:`EXECUTION_ONLY_KEYS` lists them.

Batch sizes (three keys, three jobs, nested):

- ``run.batch_size``: candidates a worker handles per step of a shard job: one
  ``generate`` call and one face-analysis call per step; the step's full-size images
  are held in memory (twice with ``run.overlap``).
- ``generation.batch_size``: images per UNet call (x2 with guidance). A ``generate``
  call with more images runs in chunks of this size, so the GPU batch is
  ``min(run.batch_size, generation.batch_size)``; set both to the same value unless
  memory says otherwise.
- ``faces.batch_size``: aligned crops per recognizer call (and images per detector
  call when the detector takes batches) inside one face-analysis call.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from synthface.config import StrictModel, load_config
from synthface.faces.config import FaceAnalysisConfig
from synthface.filtering.config import FilterConfig
from synthface.generation.config import GenerationConfig
from synthface.identity.config import IdentityConfig
from synthface.shards.schema import MAX_INDEX

# `run.*` keys that do not change what is written; a resume may change them.
EXECUTION_ONLY_KEYS = (
    "workers",
    "gpus_per_worker",
    "cpus_per_worker",
    "max_jobs_in_flight",
    "max_retries",
    "log_every_s",
    "job_timeout_s",
    "overlap",
    "resume_check",
)


class ClassGroup(StrictModel):
    """One block of identities with its own class size (a mixed protocol, e.g. 20K x 50 + 40K x 5)."""

    num_ids: int = Field(ge=1, description="Identities in this group (the next ones of the bank, in id order).")
    images_per_id: int | None = Field(
        None, ge=1, le=MAX_INDEX, description="Accepted images per identity of this group (None = run.images_per_id)."
    )
    max_candidates_per_id: int | None = Field(
        None, ge=1, le=MAX_INDEX, description="Candidate cap per identity of this group (None = run.max_candidates_per_id)."
    )


class RunConfig(StrictModel):
    """Shard jobs, workers, retries and output options of `synthface generate`."""

    bank: str = Field("bank.parquet", description="Identity bank Parquet (from `synthface ids sample`).")
    max_ids: int | None = Field(
        None, ge=1, description="Use only the first N identities of the bank (None = all)."
    )
    ids_per_shard: int = Field(100, ge=1, le=100_000, description="Identities per shard job (one shard each).")
    images_per_id: int = Field(
        50,
        ge=1,
        le=MAX_INDEX,
        description=(
            "Accepted images per identity (the class size). Candidates are generated in rounds until this "
            "many pass the filter or max_candidates_per_id is spent."
        ),
    )
    oversample: float = Field(
        1.2,
        ge=1.0,
        le=10.0,
        description=(
            "First round: ceil(images_per_id x oversample) candidates per identity. A top-up round asks for "
            "the missing count x oversample / the class's acceptance so far."
        ),
    )
    max_candidates_per_id: int | None = Field(
        None,
        ge=1,
        le=MAX_INDEX,
        description="Candidates one identity may use in all rounds together (None = 2 x its images_per_id, at most 1000).",
    )
    short_classes: Literal["drop", "flag"] = Field(
        "drop",
        description=(
            "An identity that spent max_candidates_per_id with fewer than images_per_id accepted: drop it "
            "(short_class), or keep its images flagged short_class (still at least filter.min_images)."
        ),
    )
    groups: list[ClassGroup] | None = Field(
        None,
        min_length=1,
        description=(
            "Mixed protocol: consecutive blocks of bank identities, each with its own images_per_id "
            "(e.g. [{num_ids: 20000, images_per_id: 50}, {num_ids: 40000, images_per_id: 5}]). "
            "run.images_per_id and run.max_candidates_per_id are the groups' defaults; not with max_ids. "
            "Shard jobs never straddle two groups."
        ),
    )
    rejected_thumbnails: bool = Field(
        True,
        description=(
            "Store a 56x56 JPEG of each rejected candidate's aligned face in the shard parquet "
            "(column thumb, ~1 KB each), so the dataset card can show what the filter rejected."
        ),
    )
    batch_size: int = Field(
        16, ge=1, le=4096, description="Images per generator / face-analysis call inside a worker."
    )
    inter_class: Literal["dataset", "shard", "off"] = Field(
        "dataset",
        description=(
            "Inter-class duplicate check: 'dataset' compares the class centres within each shard job and "
            "then, once every shard has committed, across the whole dataset (finalising rewrites the "
            "shards that held a dropped class); 'shard' only within each shard job; 'off' skips it."
        ),
    )
    write_full_image: bool = Field(
        False, description="Also store the full generated image (extension `full.jpg`) per sample."
    )
    jpeg_quality: int = Field(95, ge=50, le=100, description="JPEG quality of the stored images.")
    # Execution-only keys (see EXECUTION_ONLY_KEYS).
    workers: int = Field(1, ge=1, le=4096, description="Worker actors (each loads the models once).")
    gpus_per_worker: float = Field(
        1.0, ge=0.0, le=8.0, description="GPUs per worker; fractional shares a GPU, 0 runs on CPU."
    )
    cpus_per_worker: float = Field(
        1.0, gt=0.0, le=256.0, description="CPUs reserved per worker (fractional allowed)."
    )
    max_jobs_in_flight: int | None = Field(
        None, ge=1, description="Shard jobs submitted but not finished (None = 2 per worker)."
    )
    max_retries: int = Field(2, ge=0, le=100, description="Extra attempts for a failing shard job.")
    log_every_s: float = Field(30.0, gt=0.0, description="Seconds between plain progress log lines.")
    job_timeout_s: float | None = Field(
        None,
        gt=0.0,
        description=(
            "Seconds a shard job may run before it counts as hung: its worker is replaced and the job "
            "retried elsewhere. None derives it from the jobs measured so far (5x the slowest, at least "
            "300 s; no limit until the first job finishes)."
        ),
    )
    resume_check: Literal["sha256", "size"] = Field(
        "sha256",
        description=(
            "How a rerun checks the committed shards it keeps: sha256 reads every tar and parquet "
            "(on S3, the whole dataset is downloaded at each rerun); size compares a listing's sizes "
            "only (a truncated or missing file is still caught; `synthface verify` checks the sha256)."
        ),
    )
    # Off by default until a GPU run shows it helps (issue 17): on a CPU-only
    # worker both stages compete for the same cores.
    overlap: bool = Field(
        False,
        description=(
            "Inside a worker, generate batch k+1 while batch k is analysed and encoded on a CPU thread "
            "(same shards; holds two batches of images instead of one)."
        ),
    )

    @model_validator(mode="after")
    def _groups_replace_the_flat_keys(self):
        if self.groups is not None and self.max_ids is not None:
            raise ValueError("run.groups fixes how many identities are used; remove run.max_ids")
        for i, (n, cap) in enumerate(self.class_sizes()):
            if cap < n:
                where = f"groups[{i}]: " if self.groups is not None else ""
                raise ValueError(f"{where}max_candidates_per_id ({cap}) is below images_per_id ({n})")
        return self

    def class_sizes(self) -> list[tuple[int, int]]:
        """(images_per_id, candidate cap) of each group (one entry without groups)."""
        groups = self.groups or [ClassGroup(num_ids=1)]
        out = []
        for g in groups:
            n = g.images_per_id or self.images_per_id
            out.append((n, candidate_cap(n, g.max_candidates_per_id or self.max_candidates_per_id)))
        return out

    def jobs_in_flight(self) -> int:
        return self.max_jobs_in_flight or 2 * self.workers


def candidate_cap(images_per_id: int, max_candidates_per_id: int | None) -> int:
    """Candidates one identity may use: the configured cap, else twice its class size (within the key range)."""
    return max_candidates_per_id or min(MAX_INDEX, 2 * images_per_id)


def first_round(images_per_id: int, oversample: float, cap: int) -> int:
    """Candidates of an identity's first round."""
    return min(cap, math.ceil(images_per_id * oversample - 1e-9))


class FactoryConfig(StrictModel):
    seed: int = Field(
        0, ge=0, le=2**64 - 1, description="Run seed (0 .. 2**64-1: larger ones would wrap): all randomness derives from it."
    )
    models_dir: str = Field("models", description="Local model folder (see `synthface models check`).")
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    faces: FaceAnalysisConfig = Field(default_factory=FaceAnalysisConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    run: RunConfig = Field(default_factory=RunConfig)


def load_factory_config(path=None, overrides=None) -> FactoryConfig:
    return load_config(FactoryConfig, path, overrides)
