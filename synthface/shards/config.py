"""Config of the distributed run and shard output (`run:` section).

Two kinds of keys live here. Keys that shape the dataset (``bank``,
``ids_per_shard``, ``images_per_id``, ``max_ids``, ``inter_class``, the image
options) are part of the run's identity: resuming with different values is
refused. Keys that only shape the execution (workers, GPUs, retries, logging)
may change between a run and its resume; :data:`EXECUTION_ONLY_KEYS` lists them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synthface.config import StrictModel

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
)


class RunConfig(StrictModel):
    """Shard jobs, workers, retries and output options of `synthface generate`."""

    bank: str = Field("bank.parquet", description="Identity bank Parquet (from `synthface ids sample`).")
    max_ids: int | None = Field(
        None, ge=1, description="Use only the first N identities of the bank (None = all)."
    )
    ids_per_shard: int = Field(100, ge=1, le=100_000, description="Identities per shard job (one shard each).")
    images_per_id: int = Field(50, ge=1, le=999, description="Candidate images generated per identity.")
    batch_size: int = Field(
        16, ge=1, le=4096, description="Images per generator / face-analysis call inside a worker."
    )
    inter_class: Literal["shard", "off"] = Field(
        "shard",
        description=(
            "Inter-class duplicate check: 'shard' compares the class centres of the identities "
            "in each shard job (the bank sampler already spaces identities apart); 'off' skips it."
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
    # Off by default until a GPU run shows it helps (issue 17): on a CPU-only
    # worker both stages compete for the same cores.
    overlap: bool = Field(
        False,
        description=(
            "Inside a worker, generate batch k+1 while batch k is analysed and encoded on a CPU thread "
            "(same shards; holds two batches of images instead of one)."
        ),
    )

    def jobs_in_flight(self) -> int:
        return self.max_jobs_in_flight or 2 * self.workers
