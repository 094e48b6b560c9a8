"""`synthface generate`, the driver: plan, dispatch, resume, manifest.

The driver never touches images. It reads the bank (to plan jobs and hand the
embeddings to the workers through Ray's object store), skips shards already
committed in OUT, dispatches the rest to worker actors, and finally writes the
manifest and the dataset card from the shards' stats.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from pipelines.dispatch import Dispatcher
from pipelines.planning import plan_jobs, run_groups
from pipelines.progress import RunProgress
from pipelines.ray_connect import init_ray
from pipelines.shard_job import Stages
from pipelines.stages import build_stages, load_bank_embeddings
from synthface.errors import ConfigError, OutputError, RunStateError
from pipelines.config import FactoryConfig
from synthface.generation.controls import control_sampler, pool_digests
from synthface.models.integrity import verify_model_folder
from synthface.shards.lock import OutputLock
from synthface.shards.manifest import DATASET_FILE, write_dataset_manifest
from pipelines.resume import check_or_start_run, run_record
from synthface.models.integrity import describe_models
from synthface.shards.storage import Output, fsspec_env
from synthface.shards.writer import committed_shards, remove_interrupted_writes, shard_name

log = logging.getLogger("synthface.generate")


@dataclass
class GenerateResult:
    out: str
    num_shards: int
    skipped: int
    done: int
    failed: dict[int, str] = field(default_factory=dict)
    retries: int = 0
    workers_replaced: int = 0
    timeouts: int = 0
    dataset: dict[str, Any] = field(default_factory=dict)
    finalise: Any = None  # pipelines.finalise.FinaliseResult when the run finalised

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """One line: what the dataset holds and what this run did."""
        ds = self.dataset
        return (
            f"{self.out}: {ds.get('num_images', 0)} images of {ds.get('num_classes', 0)} identities in "
            f"{len(ds.get('shards', []))} shards (acceptance {ds.get('acceptance_rate', 0):.1%}; "
            f"{self.skipped} shards resumed, {self.done} generated, {self.retries} retries)"
        )


def _check_resources(cfg: FactoryConfig) -> None:
    import ray

    res = ray.cluster_resources()
    gpus, cpus = res.get("GPU", 0.0), res.get("CPU", 0.0)
    need_gpu, need_cpu = cfg.run.gpus_per_worker, cfg.run.cpus_per_worker
    if need_gpu > gpus:
        raise ConfigError(
            f"'run.gpus_per_worker' is {need_gpu} but the Ray cluster has {gpus:g} GPUs; "
            f"set run.gpus_per_worker=0 to run on CPU"
        )
    if need_cpu > cpus:
        raise ConfigError(f"'run.cpus_per_worker' is {need_cpu} but the Ray cluster has {cpus:g} CPUs")
    fit = min(cpus // need_cpu, gpus // need_gpu if need_gpu else float("inf"))
    if fit < cfg.run.workers:
        # not an error: an autoscaling cluster may grow, and jobs start on the workers that fit
        log.warning(
            "only %d of %d workers fit the cluster's resources now; jobs start on those, the others "
            "join if the cluster grows (set run.workers=%d to silence this)", fit, cfg.run.workers, fit,
        )


def worker_config(cfg_data: dict[str, Any]) -> dict[str, Any]:
    """The config the workers get: a relative models_dir that exists here becomes absolute,
    so workers started in another working directory (``ray job submit``) find it."""
    data = dict(cfg_data)
    models = Path(data.get("models_dir", ""))
    if not models.is_absolute() and models.is_dir():
        data["models_dir"] = str(models.resolve())
    # the control pools (generation.expression.pool, generation.pose.pool) likewise
    generation = data.get("generation")
    if isinstance(generation, dict):
        generation = data["generation"] = dict(generation)
        for section in ("expression", "pose"):
            part = generation.get(section)
            pool = part.get("pool") if isinstance(part, dict) else None
            if pool and not Path(pool).is_absolute() and Path(pool).exists():
                generation[section] = {**part, "pool": str(Path(pool).resolve())}
    return data


def generate(
    cfg: FactoryConfig,
    out: str,
    *,
    ray_address: str | None = None,
    restart: bool = False,
    stages_factory: Callable[[FactoryConfig], Stages] = build_stages,
    console: Console | None = None,
    write_card: bool = True,
    verify_models: bool = False,
) -> GenerateResult:
    """``verify_models`` re-hashes every model file instead of the size + mtime check."""
    output = Output(out)
    cfg_data = cfg.model_dump(mode="json")
    # before anything is written: refuse model files that differ from their manifest
    models_checked = verify_model_folder(cfg.models_dir, full=verify_models)
    if models_checked is None and Path(cfg.models_dir).is_dir():
        log.warning(
            "%s has no synthface-models.json: its files are not verified (record them with "
            "`synthface models record %s`)", cfg.models_dir, cfg.models_dir,
        )
    embeddings = load_bank_embeddings(cfg.run.bank, cfg.run.max_ids)
    if len(embeddings) == 0:
        raise ConfigError(f"'run.bank': {cfg.run.bank} holds no identities")
    reference = None
    if cfg.generation.reference.enabled:  # fail here, not in every worker: no images listed, folder gone
        from pipelines.stages import make_reference

        reference = make_reference(cfg)
    control_sampler(cfg.generation, cfg.seed)  # a bad control pool fails here, before anything is written
    groups = run_groups(cfg.run, len(embeddings))
    num_ids = sum(g.num_ids for g in groups)
    embeddings = embeddings[:num_ids]
    # what the images are made from besides the bank and the models, hashed: a resume
    # notices files changed at the same path
    inputs = pool_digests(cfg.generation)
    if reference is not None:
        inputs["reference_images_sha256"] = reference.images.digest(num_ids)
    record = run_record(cfg_data, cfg.run.bank, num_ids, inputs=inputs)
    with OutputLock(output):  # one driver per OUT, for the whole run
        return _generate_locked(
            cfg, output, cfg_data, embeddings, record, ray_address, restart, stages_factory, console, write_card,
            groups, describe_models(cfg.models_dir, models_checked, "sha256" if verify_models else "size+mtime"),
        )


def _generate_locked(
    cfg: FactoryConfig,
    output: Output,
    cfg_data: dict[str, Any],
    embeddings,
    record: dict[str, Any],
    ray_address: str | None,
    restart: bool,
    stages_factory: Callable[[FactoryConfig], Stages],
    console: Console | None,
    write_card: bool,
    groups,
    models_info: dict[str, Any],
) -> GenerateResult:
    import ray

    from pipelines.worker import ShardWorker

    num_ids = len(embeddings)
    resuming = check_or_start_run(output, record, restart)

    jobs = plan_jobs(groups, cfg.run.ids_per_shard)
    remove_interrupted_writes(output)
    committed = resumable_shards(output, record["config_hash"], len(jobs), checksums=cfg.run.resume_check == "sha256")
    todo = [j for j in jobs if j.index not in committed]
    log.info(
        "%s %s: %d identities, %d shards (%d already committed, %d to do), images per identity: %s",
        "resuming" if resuming else "starting",
        output.url,
        num_ids,
        len(jobs),
        len(jobs) - len(todo),
        len(todo),
        " + ".join(f"{g.num_ids} x {g.images_per_id}" for g in groups),
    )
    result = GenerateResult(out=output.url, num_shards=len(jobs), skipped=len(jobs) - len(todo), done=0)

    if todo:
        started_ray = init_ray(ray_address)
        dispatcher = None
        progress = None
        try:
            _check_resources(cfg)
            embeddings_ref = ray.put(embeddings)
            env = fsspec_env()
            actor_cls = ray.remote(ShardWorker).options(
                num_cpus=cfg.run.cpus_per_worker,
                num_gpus=cfg.run.gpus_per_worker,
                max_restarts=0,
                runtime_env={"env_vars": env} if env else None,
            )

            worker_cfg = worker_config(cfg_data)

            def make_actor():
                return actor_cls.remote(worker_cfg, output.url, embeddings_ref, stages_factory, record["config_hash"])

            workers = min(cfg.run.workers, len(todo))
            dispatcher = Dispatcher(
                make_actor,
                num_workers=workers,
                max_in_flight=cfg.run.jobs_in_flight(),
                max_retries=cfg.run.max_retries,
                on_done=lambda job, stats: progress.shard_done(stats),
                on_failed=lambda job, err: progress.shard_failed(),
                on_tick=lambda: progress.tick() if progress is not None else None,
                job_timeout_s=cfg.run.job_timeout_s,
            )
            log.info(
                "starting %d workers (%g CPU, %g GPU each); each loads the models once",
                workers, cfg.run.cpus_per_worker, cfg.run.gpus_per_worker,
            )
            dispatcher.start_workers()  # returns once the first worker is ready; the others join as they load
            # the clock (images/s, ETA) starts once the models are loaded
            progress = RunProgress(len(jobs), result.skipped, cfg.run.log_every_s, console=console)
            outcome = dispatcher.run(todo)
        finally:
            if progress is not None:
                progress.close()
            if dispatcher is not None:
                dispatcher.shutdown()
            if started_ray:
                ray.shutdown()
        result.done = len(outcome.done)
        result.failed = outcome.failed
        result.retries = outcome.retries
        result.workers_replaced = outcome.workers_replaced
        result.timeouts = outcome.timeouts

    # a worker killed while writing leaves a temp file; its job was redone elsewhere
    # (the workers are gone now, so nothing is still writing one)
    remove_interrupted_writes(output)
    # the shards were checked on the way in and written by this run: sizes suffice here
    committed = committed_shards(output, record["config_hash"], checksums=False)
    try:
        result.dataset = write_dataset_manifest(output, record, committed, len(jobs), result.failed, models_info)
        if cfg.run.inter_class == "dataset" and not result.failed:
            from pipelines.finalise import finalise

            result.finalise = finalise(output)
            result.dataset = output.read_json(DATASET_FILE)
        if write_card:
            from synthface.shards.card import write_card as _write_card

            _write_card(output)
    except OutputError as exc:
        if not result.failed:
            raise
        # the shards failed for the same reason (a full disk, say): their summary is the message
        log.error("could not write the manifest and card either: %s", exc)
    if result.failed:
        log.error("%d shard(s) failed: %s", len(result.failed), ", ".join(f"{k}" for k in sorted(result.failed)))
    return result


def resumable_shards(output: Output, config_hash: str, num_jobs: int, checksums: bool = True) -> dict[int, dict[str, Any]]:
    """The committed shards a resume keeps. A shard whose files do not match its stats
    (truncated, missing, damaged; with ``checksums`` False only sizes are compared, from one
    listing, and no shard is read) or that another config made loses its commit marker
    here, is redone, and the log says which and why."""
    rejected: dict[int, str] = {}
    committed = committed_shards(output, config_hash, checksums=checksums, rejected=rejected)
    for index, reason in sorted(rejected.items()):
        log.warning("%s is not committed (%s): redoing it", shard_name(index), reason)
        output.remove(f"{shard_name(index)}.json")
    return {k: v for k, v in committed.items() if k < num_jobs}


def ensure_complete(result: GenerateResult) -> None:
    """One line for a run that left shards undone, grouped by reason
    ("13 of 16 shards failed: no space left on the output (shard-000003, ...)")."""
    if result.failed:
        by_reason: dict[str, list[int]] = {}
        for k, err in sorted(result.failed.items()):
            by_reason.setdefault(err, []).append(k)
        parts = []
        for err, shards in by_reason.items():
            names = ", ".join(shard_name(k) for k in shards[:4]) + (", ..." if len(shards) > 4 else "")
            parts.append(f"{err} ({names})")
        raise RunStateError(
            f"{len(result.failed)} of {result.num_shards} shards failed: {'; '.join(parts)}; "
            f"the others are committed: fix that and rerun the same command to do the failed ones"
        )
