"""`synthface sample`: a few identities of a bank generated the way a shard job generates them.

Each image's conditioning vector (jitter, reference input) and seed come from the
shard job's own code (:func:`pipelines.shard_job.candidate_inputs`,
:func:`pipelines.stages.make_jitter`, ``image_seed``), so a sampled image is the
candidate a factory run with the same config would generate (before filtering).
Writes one PNG per image, a contact sheet (identities x images) and ``sample.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.shard_job import Stages, candidate_inputs
from pipelines.stages import make_jitter, make_reference
from synthface.errors import InputDataError, OutputError
from pipelines.config import FactoryConfig
from synthface.files import write_text_atomic
from synthface.seeds import image_seed

MAX_SAMPLE_IDS = 1000  # `sample` holds every image for its contact sheet; datasets are `generate`'s job

# progress(done, total): called with done=0 once the model is loaded, then after each batch
Progress = Callable[[int, int], None]


def parse_ids(text: str, limit: int = MAX_SAMPLE_IDS) -> list[int]:
    """``"0,1,5-7"`` -> [0, 1, 5, 6, 7]; more than ``limit`` ids is an error (counted before expanding)."""
    ranges: list[range] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part[1:]:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise InputDataError(f"--ids: range {part!r} is empty (write it low-high, e.g. {hi}-{lo})")
                ranges.append(range(lo, hi + 1))
            else:
                ranges.append(range(int(part), int(part) + 1))
    except ValueError:
        raise InputDataError(f"--ids: expected comma-separated integers or ranges like 0,1,5-7, got {text!r}") from None
    count = sum(len(r) for r in ranges)
    if count > limit:
        raise InputDataError(
            f"--ids: {count:,} identities; `sample` shows at most {limit} (use `synthface generate` for a dataset)"
        )
    ids = [i for r in ranges for i in r]
    if not ids or min(ids) < 0:
        raise InputDataError(f"--ids: expected non-negative identity ids, got {text!r}")
    return list(dict.fromkeys(ids))


def read_bank_vectors(path: Path, wanted: list[int]) -> dict[int, np.ndarray]:
    """Embeddings of the ``wanted`` ids of an identity bank: id -> float32[512]."""
    from synthface.identity.bank import read_bank

    bank = read_bank(path)
    index = {int(i): row for row, i in enumerate(bank.ids)}
    absent = [i for i in wanted if i not in index]
    if absent:
        raise InputDataError(f"{path}: no identities with ids {absent[:10]} (the bank has {len(bank.ids)} identities)")
    embeddings = np.asarray(bank.embeddings, dtype=np.float32)
    return {i: embeddings[index[i]] for i in wanted}


@dataclass
class SampleResult:
    out: Path
    ids: list[int]
    images: int
    seconds_per_image: float
    generator: dict  # Arc2FaceGenerator.describe()
    steps: int
    jitter: bool
    reference_strength: float | None  # None: reference mode off

    def summary(self) -> str:
        """The command's closing line."""
        return (
            f"wrote {self.images} images of {len(self.ids)} identities and contact_sheet.png to {self.out} "
            f"({self.seconds_per_image:.3f} s/image, {self.generator['scheduler']} x{self.steps} steps, "
            f"jitter {'on' if self.jitter else 'off'}"
            + (f", reference strength {self.reference_strength}" if self.reference_strength is not None else "") + ")"
        )


def sample(
    cfg: FactoryConfig, bank: Path, ids: str, per_id: int, out: Path, models_dir: Path, *,
    jitter: bool = True, progress: Progress | None = None,
) -> SampleResult:
    """Generate ``per_id`` images of each identity in ``ids`` (text, see :func:`parse_ids`) into ``out``.

    Every user error (model folder, ids, bank, control pools, ``out``) is raised before the slow model load.
    """
    from synthface.generation.controls import control_sampler
    from synthface.generation.loading import require_generator_files
    from synthface.imaging import contact_sheet, save_png

    require_generator_files(models_dir)  # fail before the slow imports
    wanted = parse_ids(ids)
    vectors = read_bank_vectors(bank, wanted)
    jitter_fn = make_jitter(cfg) if jitter and cfg.identity.jitter.enabled else None
    controls = control_sampler(cfg.generation, cfg.seed)  # checks the control pools before the model load
    try:  # before the slow model load, so a bad --out fails at once
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot create the output folder ({exc.strerror or exc})") from None
    reference = make_reference(cfg, bank=bank)
    # every batch's inputs before the model load: a missing reference image fails at once
    stages = Stages(generator=None, analyzer=None, id_filter=None, jitter=jitter_fn, reference=reference)
    jobs = [(i, k) for i in wanted for k in range(per_id)]
    chunks = [jobs[s : s + cfg.generation.batch_size] for s in range(0, len(jobs), cfg.generation.batch_size)]
    # candidate_inputs reads embeddings[identity id]: the dict of the wanted ids serves as well as the bank array
    inputs = [candidate_inputs(chunk, vectors, stages, cfg.seed) for chunk in chunks]

    from synthface.generation.generator import Arc2FaceGenerator  # heavy: torch, diffusers

    t0 = time.perf_counter()
    generator = Arc2FaceGenerator.from_folder(models_dir, cfg.generation)
    load_s = time.perf_counter() - t0

    images: dict[tuple[int, int], np.ndarray] = {}
    records: dict[tuple[int, int], dict] = {}
    t0 = time.perf_counter()
    if progress:
        progress(0, len(jobs))
    for chunk, (id_vectors, kwargs, chunk_records) in zip(chunks, inputs):
        records.update(chunk_records)
        if controls:
            kwargs.update(controls.generate_kwargs([controls.for_candidate(i, k) for i, k in chunk]))
        result = generator.generate(id_vectors, [image_seed(cfg.seed, i, k) for i, k in chunk], **kwargs)
        for (i, k), image in zip(chunk, result):
            images[i, k] = image
            save_png(image, out / f"{i:07d}_{k:03d}.png")
        if progress:
            progress(len(images), len(jobs))
    gen_s = time.perf_counter() - t0

    sheet = contact_sheet([[images[i, k] for k in range(per_id)] for i in wanted], row_labels=[f"id {i}" for i in wanted])
    save_png(sheet, out / "contact_sheet.png")
    meta = {
        "generator": generator.describe(),
        "seed": cfg.seed,
        "bank": str(bank),
        "jitter": jitter_fn is not None,
        "images": [
            {"id": i, "index": k, "seed": image_seed(cfg.seed, i, k), "file": f"{i:07d}_{k:03d}.png",
             **({"controls": controls.for_candidate(i, k).record()} if controls else {}),
             **records.get((i, k), {})}
            for i, k in jobs
        ],
        "load_seconds": round(load_s, 3),
        "generate_seconds": round(gen_s, 3),
    }
    write_text_atomic(out / "sample.json", json.dumps(meta, indent=2))
    return SampleResult(
        out, wanted, len(jobs), gen_s / len(jobs), generator.describe(), generator.steps, jitter_fn is not None,
        cfg.generation.reference.strength if reference else None,
    )
