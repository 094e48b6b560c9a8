"""The worker: loads the stages once, then runs whole shard jobs.

:class:`ShardWorker` is a plain class; the dispatcher turns it into a Ray
actor with the configured CPU/GPU share. Each job writes its shard straight to
the output; only the shard's small stats dict returns to the driver.
"""

from __future__ import annotations

import os
import platform
import traceback
from typing import Any, Callable

import numpy as np

from pipelines.planning import ShardJob
from pipelines.shard_job import JobSettings, Stages, run_shard_job
from pipelines.config import FactoryConfig
from synthface.models.integrity import verify_model_folder
from pipelines.resume import run_config_hash
from synthface.shards.storage import Output
from synthface.shards.writer import warm_up as writer_warm_up


def job_settings(cfg: FactoryConfig, config_hash: str | None = None) -> JobSettings:
    """``config_hash``: the driver's run identity. Workers must get it from the driver: their
    config has paths made absolute (``worker_config``), which would hash differently."""
    return JobSettings(
        run_seed=cfg.seed,
        images_per_id=cfg.run.images_per_id,
        batch_size=cfg.run.batch_size,
        jpeg_quality=cfg.run.jpeg_quality,
        write_full_image=cfg.run.write_full_image,
        inter_class=cfg.run.inter_class,
        config_hash=config_hash or run_config_hash(cfg.model_dump(mode="json")),
        oversample=cfg.run.oversample,
        max_candidates_per_id=cfg.run.max_candidates_per_id,
        short_classes=cfg.run.short_classes,
        rejected_thumbnails=cfg.run.rejected_thumbnails,
        overlap=cfg.run.overlap,
        yaw_target_std=cfg.filter.yaw_target_std,
    )


def check_writable(output: Output) -> None:
    """Write and delete a small probe file, so a worker that cannot write the output (no S3
    credentials on its node, a read-only mount) says so when it starts, not after a shard."""
    name = f".synthface-probe-{platform.node()}-{os.getpid()}"
    output.write_bytes(name, b"")
    output.remove(name)


class ShardWorker:
    def __init__(
        self,
        cfg_data: dict[str, Any],
        out_url: str,
        embeddings: np.ndarray,
        stages_factory: Callable[[FactoryConfig], Stages],
        config_hash: str | None = None,
    ):
        # A failure here (missing weights, bad config) is kept and raised by
        # ready(), so the driver can show the user the original error.
        self.init_error: BaseException | None = None
        self.init_traceback = ""
        try:
            self.cfg = FactoryConfig.model_validate(cfg_data)
            self.settings = job_settings(self.cfg, config_hash)
            self.output = Output(out_url)
            check_writable(self.output)  # before loading models: no credentials shows at once
            self.embeddings = embeddings
            # this node's copy of the model folder, checked like the driver's (size + mtime)
            verify_model_folder(self.cfg.models_dir)
            self.stages = stages_factory(self.cfg)
            writer_warm_up()
            # a filter told to judge by the target needs embeddings of the bank's width: say so now
            self.stages.id_filter.target_applies(embeddings.shape[1], self.stages.analyzer.embedding_dim)
        except Exception as exc:  # noqa: BLE001 - reported by ready()
            self.init_error = exc
            self.init_traceback = traceback.format_exc()

    def ready(self) -> dict[str, Any]:
        if self.init_error is not None:
            raise self.init_error
        return {"host": platform.node(), "pid": os.getpid()}

    def run_job(self, job: ShardJob, attempt: int = 0) -> dict[str, Any]:
        if self.init_error is not None:
            raise self.init_error
        return run_shard_job(job, self.embeddings, self.stages, self.settings, self.output, attempt=attempt)
