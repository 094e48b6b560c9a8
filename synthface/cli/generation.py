"""CLI commands of the generation stage.

- ``synthface models download|check|init-tiny``: the local model folder;
- ``synthface sample``: a few identities from a bank -> images + a contact sheet.
"""

from __future__ import annotations

from pathlib import Path

import typer

models_app = typer.Typer(help="The local model folder: download, check, tiny test folder.", no_args_is_help=True)


# ---------------------------------------------------------------- models
@models_app.command("download")
def models_download(
    to: Path = typer.Option(..., "--to", help="Model folder to fill (created if needed)."),
    lcm_lora: bool = typer.Option(False, "--lcm-lora", help="Also fetch the optional LCM-LoRA (few-step mode)."),
    revision: str = typer.Option(None, "--revision", help="Pin the FoivosPar/Arc2Face revision (branch, tag, commit)."),
    detector_repo: str = typer.Option(None, "--detector-repo", help="Hub repo holding scrfd_10g_bnkps.onnx (antelopev2 mirror)."),
    controlnet: bool = typer.Option(False, "--controlnet", help="Also fetch Arc2Face's pose ControlNet (generation.pose)."),
    exp_adapter: bool = typer.Option(False, "--exp-adapter", help="Also fetch Arc2Face's expression adapter (generation.expression)."),
) -> None:
    """Download Arc2Face, the SD 1.5 parts and the face models from the Hugging Face hub."""
    from synthface.models.hub import download

    def show(f) -> None:
        typer.echo(f"fetching {f.path}  <- {f.repo}:{f.repo_path}")

    def checked(f, entry: dict) -> None:
        how = (
            "matches the known-good sha256 shipped with synthface"
            if entry["pinned"]
            else "UNPINNED: synthface ships no known-good sha256 for this file; recorded as downloaded"
        )
        typer.echo(f"  {f.path}: {entry['size']} bytes, sha256 {entry['sha256']}, {how}")

    download(
        to, include_lcm_lora=lcm_lora, revision=revision, detector_repo=detector_repo, progress=show, checked=checked,
        include_controlnet=controlnet, include_exp_adapter=exp_adapter,
    )
    typer.echo(
        f"model folder ready: {to}; sha256 and size of every file recorded in {to}/synthface-models.json "
        f"(re-check them with `synthface models check {to} --verify`)"
    )


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@models_app.command("check")
def models_check(
    folder: Path = typer.Argument(..., help="Model folder."),
    verify: bool = typer.Option(
        False, "--verify", help="Re-hash every file and compare with the sha256 recorded in synthface-models.json."
    ),
) -> None:
    """List which model files are present, which are missing, and how to get them (exit 1 if any required is missing).

    Also compares the files with the sizes and hashes recorded in synthface-models.json
    (cheap size + mtime check; every file re-hashed with --verify); a differing file
    stops with a message naming it (exit 2).
    """
    from rich.console import Console
    from rich.table import Table

    from synthface.errors import MissingModelError
    from synthface.models.check import check, missing_folder_message

    report = check(folder)
    if not report.exists:
        raise MissingModelError(missing_folder_message(folder))
    recorded = (report.manifest or {}).get("files") or {}
    table = Table(title=f"model folder {folder} (origin: {report.origin})", show_lines=False)
    for col in ("status", "file", "size", "sha256", "part", "how to get it"):
        table.add_column(col, overflow="fold", no_wrap=col == "file")
    for s in report.files:
        if s.present:
            status = "[green]ok[/]"
        elif s.file.required:
            status = "[red]MISSING[/]"
        else:
            status = "[yellow]optional, absent[/]"
        how = "" if s.present else f"{s.file.repo} : {s.file.repo_path}"
        entry = recorded.get(s.found_as or s.file.path)
        pin = "-" if entry is None else ("pinned" if entry.get("pinned") else "unpinned")
        table.add_row(status, s.found_as or s.file.path, _size(s.size), pin, s.file.part, how)
    Console(width=160).print(table)
    missing = report.missing_required
    if missing:
        typer.echo(
            f"{len(missing)} required file(s) missing: get them with `synthface models download --to {folder}` "
            f"(or `synthface models init-tiny DIR` for a tiny test folder)"
        )
        raise typer.Exit(1)
    absent = sorted({s.file.extra for s in report.files if s.file.extra and not s.present})
    names = {"lcm-lora": "LCM-LoRA", "controlnet": "pose ControlNet", "exp-adapter": "expression adapter"}
    extra = "".join(
        f"; {names.get(e, e)} absent (optional: `synthface models download --to {folder} --{e}`)" for e in absent
    )
    typer.echo(f"all required model files present{extra}")
    _check_recorded(folder, recorded, verify)


def _check_recorded(folder: Path, recorded: dict, verify: bool) -> None:
    from synthface.models.integrity import check_files

    if not recorded and not verify:
        typer.echo(
            f"no sha256 recorded in {folder}/synthface-models.json: `generate` will refuse this folder until "
            f"you record them with `synthface models record {folder}`"
        )
        return
    checked = check_files(folder, full=verify)  # raises ModelIntegrityError naming the file
    pinned = sum(1 for e in checked.values() if e["pinned"])
    how = "re-hashed, sha256 matches" if verify else "size + mtime match (re-hash with --verify)"
    typer.echo(
        f"{len(checked)} recorded file(s) checked: {how}; {pinned} pinned to a known-good sha256, "
        f"{len(checked) - pinned} unpinned"
    )


@models_app.command("record")
def models_record(folder: Path = typer.Argument(..., help="Model folder.")) -> None:
    """Hash the model files now in FOLDER into its synthface-models.json.

    For a folder assembled by hand or downloaded before synthface recorded hashes:
    only run it on files you trust, since `generate` and `models check` then treat
    them as the reference.
    """
    from synthface.models.integrity import known_mismatch, record_folder

    files = record_folder(folder)
    for rel, entry in files.items():
        warning = known_mismatch(folder, rel, entry["sha256"], entry["size"])
        if warning:
            typer.echo(f"warning: {warning} (recorded anyway, as unpinned)")
    pinned = sum(1 for e in files.values() if e["pinned"])
    typer.echo(f"recorded {len(files)} file(s) in {folder}/synthface-models.json ({pinned} pinned to a known-good sha256)")


@models_app.command("init-tiny")
def models_init_tiny(
    folder: Path = typer.Argument(..., help="Folder to write (must be empty, absent, or an earlier tiny folder)."),
    lcm_lora: bool = typer.Option(False, "--lcm-lora", help="Also write a tiny random LCM-LoRA."),
    controlnet: bool = typer.Option(False, "--controlnet", help="Also write a tiny random pose ControlNet."),
    exp_adapter: bool = typer.Option(False, "--exp-adapter", help="Also write a tiny random expression adapter."),
) -> None:
    """Write a tiny random-weight model folder (same classes, layout and file formats as the real one)."""
    from synthface.errors import RunStateError
    from synthface.models.check import read_manifest
    from synthface.models.tiny import init_tiny

    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        manifest = read_manifest(folder) if folder.is_dir() else None
        if not manifest or manifest.get("origin") != "tiny-random":
            raise RunStateError(
                f"refusing to write a tiny model folder into {folder}: it is not empty and not an earlier tiny "
                "folder (it may hold real weights); choose an empty folder"
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunStateError(f"cannot create the model folder {folder}: {exc.strerror or exc}") from None
    init_tiny(folder, with_lcm_lora=lcm_lora, with_controlnet=controlnet, with_exp_adapter=exp_adapter)
    typer.echo(f"tiny random-weight model folder written: {folder}")


# ---------------------------------------------------------------- sample
MAX_SAMPLE_IDS = 1000  # `sample` holds every image for its contact sheet; datasets are `generate`'s job


def parse_ids(text: str, limit: int = MAX_SAMPLE_IDS) -> list[int]:
    """``"0,1,5-7"`` -> [0, 1, 5, 6, 7]; more than ``limit`` ids is an error (counted before expanding)."""
    from synthface.errors import InputDataError

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


def read_bank_vectors(path: Path, wanted: list[int]):
    """Embeddings of ``wanted`` ids from an identity bank -> float32 [len(wanted), 512]."""
    import numpy as np

    from synthface.errors import InputDataError
    from synthface.identity.bank import read_bank

    bank = read_bank(path)
    index = {int(i): row for row, i in enumerate(bank.ids)}
    absent = [i for i in wanted if i not in index]
    if absent:
        raise InputDataError(f"{path}: no identities with ids {absent[:10]} (the bank has {len(bank.ids)} identities)")
    return np.asarray(bank.embeddings, dtype=np.float32)[[index[i] for i in wanted]]


def jitter_fn(cfg):
    """The identity stage's per-image jitter bound to the run seed and ``identity.jitter``."""
    from synthface.identity.jitter import jitter_identity

    return lambda vector, identity_id, index: jitter_identity(vector, cfg.seed, identity_id, index, cfg.identity.jitter)


def sample(
    models: Path = typer.Option(None, "--models", help="Model folder (default: models_dir of the config)."),
    bank: Path = typer.Option(..., "--bank", help="Identity bank Parquet file."),
    ids: str = typer.Option("0,1,2,3", "--ids", help="Identity ids: 0,1,2 or ranges 0-7."),
    per_id: int = typer.Option(4, "--per-id", min=1, max=100, help="Images per identity."),
    out: Path = typer.Option(..., "--out", help="Output folder for the PNGs and the contact sheet."),
    config: str = typer.Option(None, "--config", "-c", help="Factory config YAML."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a key: --set generation.steps=10."),
    jitter: bool = typer.Option(True, "--jitter/--no-jitter", help="Per-image identity jitter (identity stage)."),
) -> None:
    """Generate a few identities from a bank: PNGs plus a contact sheet (identities x images)."""
    import json
    import time

    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from synthface.errors import InputDataError
    from pipelines.config import load_factory_config
    from synthface.generation.loading import require_generator_files
    from synthface.imaging import contact_sheet, save_png
    from synthface.seeds import image_seed

    cfg = load_factory_config(config, overrides)
    models_dir = models or Path(cfg.models_dir)
    require_generator_files(models_dir)  # fail before the slow imports
    wanted = parse_ids(ids)
    vectors = read_bank_vectors(bank, wanted)
    jitter_vec = jitter_fn(cfg) if jitter and cfg.identity.jitter.enabled else None
    from synthface.generation.controls import control_sampler

    controls = control_sampler(cfg.generation, cfg.seed)  # checks the control pools before the model load
    try:  # before the slow model load, so a bad --out fails at once
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputDataError(f"--out {out}: cannot create the output folder ({exc.strerror or exc})") from None

    reference = None
    if cfg.generation.reference.enabled:
        from synthface.generation.reference import ReferenceSource

        reference = ReferenceSource.from_bank(bank, cfg.generation.reference)
    jobs = []  # (identity id, image index, vector, seed, reference input or None)
    for identity, vector in zip(wanted, vectors):
        for index in range(per_id):
            v = np.asarray(jitter_vec(vector, identity, index) if jitter_vec else vector, dtype=np.float32)
            ref = reference.candidate(cfg.seed, identity, index, v) if reference else None
            jobs.append((identity, index, ref.vector if ref else v, image_seed(cfg.seed, identity, index), ref))

    from synthface.generation.generator import Arc2FaceGenerator  # heavy: torch, diffusers

    t0 = time.perf_counter()
    generator = Arc2FaceGenerator.from_folder(models_dir, cfg.generation)
    load_s = time.perf_counter() - t0

    images: dict[tuple[int, int], np.ndarray] = {}
    t0 = time.perf_counter()
    columns = [TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("sample", total=len(jobs), rate="")
        batch = cfg.generation.batch_size
        for start in range(0, len(jobs), batch):
            chunk = jobs[start : start + batch]
            kwargs = controls.generate_kwargs([controls.for_candidate(j[0], j[1]) for j in chunk]) if controls else {}
            if reference:
                kwargs["reference_images"] = [j[4].image for j in chunk]
            result = generator.generate(np.stack([j[2] for j in chunk]), [j[3] for j in chunk], **kwargs)
            for (identity, index, *_), image in zip(chunk, result):
                images[identity, index] = image
                save_png(image, out / f"{identity:07d}_{index:03d}.png")
            done = start + len(chunk)
            progress.update(task, completed=done, rate=f"{done / (time.perf_counter() - t0):.2f} img/s")
    gen_s = time.perf_counter() - t0

    sheet = contact_sheet(
        [[images[i, k] for k in range(per_id)] for i in wanted], row_labels=[f"id {i}" for i in wanted]
    )
    save_png(sheet, out / "contact_sheet.png")
    meta = {
        "generator": generator.describe(),
        "seed": cfg.seed,
        "bank": str(bank),
        "jitter": jitter_vec is not None,
        "images": [
            {"id": i, "index": k, "seed": s, "file": f"{i:07d}_{k:03d}.png",
             **({"controls": controls.for_candidate(i, k).record()} if controls else {}),
             **({"reference": ref.record} if ref else {})}
            for i, k, _, s, ref in jobs
        ],
        "load_seconds": round(load_s, 3),
        "generate_seconds": round(gen_s, 3),
    }
    (out / "sample.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    typer.echo(
        f"wrote {len(jobs)} images of {len(wanted)} identities and contact_sheet.png to {out} "
        f"({gen_s / len(jobs):.3f} s/image, {generator.describe()['scheduler']} x{generator.steps} steps, "
        f"jitter {'on' if jitter_vec else 'off'}"
        + (f", reference strength {cfg.generation.reference.strength}" if reference else "") + ")"
    )


# ---------------------------------------------------------------- pose pool
def pose_pool(
    out: Path = typer.Argument(..., help="Folder to write the PNGs into (created)."),
    count: int = typer.Option(64, "--count", min=1, max=100000, help="Number of control images."),
    size: int = typer.Option(512, "--size", min=16, max=2048, help="Side in pixels (= generation.height and width)."),
    yaw_max: float = typer.Option(60.0, "--yaw-max", min=0, max=90, help="Yaw drawn uniformly in [-max, max] degrees."),
    pitch_max: float = typer.Option(20.0, "--pitch-max", min=0, max=90, help="Pitch range, degrees."),
    roll_max: float = typer.Option(10.0, "--roll-max", min=0, max=90, help="Roll range, degrees."),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """Write stand-in normal maps of a simple 3D head at random angles (a pose pool for generation.pose).

    Carries the head's orientation only (an ellipsoid with a nose, not a face);
    for real normal maps render EMOCA fits (docs/generation.md, "Making a pose pool").
    """
    from synthface.errors import InputDataError
    from synthface.generation.pose_maps import write_pose_pool

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputDataError(f"{out}: not an empty folder; choose a new one (a pool is used as a whole)")
    paths = write_pose_pool(out, count, size, seed, yaw_max, pitch_max, roll_max)
    typer.echo(f"wrote {len(paths)} normal maps ({size}x{size}) to {out}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.add_typer(models_app, name="models")
    app.command("sample")(sample)
    app.command("pose-pool")(pose_pool)
