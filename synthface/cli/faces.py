"""CLI commands of the face stage: `embed-gallery`, `face-pairs`, `bench faces`.

Model files come from the factory config's ``faces`` section (names relative to
``models_dir``) unless ``--detector`` / ``--recognizer`` name files directly,
e.g. the shared test models:

    synthface embed-gallery ../shared/assets/faces/images --out gallery.npy \\
        --detector ../shared/assets/models/scrfd_500m_kps.onnx \\
        --recognizer ../shared/assets/models/mobilefacenet_arcface_128d.onnx
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from bench.runner import load_average
from synthface.cli.bench import bench_app

PHOTO_DET_SIZE = 640  # ordinary photos: faces can be small, so detect at the usual insightface size

_models_opt = typer.Option(None, "--models", help="Model folder (default: the config's models_dir).")
_det_opt = typer.Option(None, "--detector", help="SCRFD detector .onnx file (overrides faces.detector).")
_rec_opt = typer.Option(None, "--recognizer", help="ArcFace-family recognizer .onnx file (overrides faces.recognizer).")
_config_opt = typer.Option(None, "--config", "-c", help="Factory config YAML (its faces/filter sections are used).")
_set_opt = typer.Option(None, "--set", help="Override a config key, e.g. --set faces.flip_average=true.")


_OPTION_OF = {"det_size": "--det-size", "detector": "--detector", "recognizer": "--recognizer"}


def _with_options(faces_cfg, updates: dict):
    """The faces config with command-line values applied; a bad value is a ConfigError naming its option."""
    from pydantic import ValidationError

    from synthface.errors import ConfigError

    try:
        return faces_cfg.model_validate({**faces_cfg.model_dump(), **updates})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        raise ConfigError(f"{_OPTION_OF.get(key, 'faces.' + key)} {updates.get(key, '')}: {err['msg']}") from None


def load_face_options(config, overrides, models, detector, recognizer, det_size=None):
    """The factory config with the command-line model choices applied."""
    from pipelines.config import load_factory_config

    extra = list(overrides or [])
    cfg = load_factory_config(config, extra)
    updates = {}
    if detector:
        updates["detector"] = str(Path(detector).expanduser().resolve())
    if recognizer:
        updates["recognizer"] = str(Path(recognizer).expanduser().resolve())
    if det_size is not None:
        updates["det_size"] = det_size
    faces = _with_options(cfg.faces, updates)
    return cfg, faces, (models if models is not None else cfg.models_dir)


def embed_gallery(
    images_dir: Path = typer.Argument(..., help="Folder of face photos (one face each; the largest face is used)."),
    out: Path = typer.Option(Path("gallery.npy"), "--out", "-o", help="Output .npy: float32 [M, D], unit-norm rows."),
    models: str = _models_opt,
    detector: str = _det_opt,
    recognizer: str = _rec_opt,
    det_size: int = typer.Option(PHOTO_DET_SIZE, "--det-size", help="Detector input size for these photos."),
    config: str = _config_opt,
    overrides: list[str] = _set_opt,
) -> None:
    """Embed a folder of real face photos: the gallery for novelty screening and the packing prior.

    Writes OUT (one row per embedded image) and OUT with .csv (every image: its row or why it
    failed). Images that fail are reported and skipped; no embedded image at all is an error.
    """
    from rich.console import Console

    from synthface.cli.progress import rate_bar
    from synthface.faces.gallery import embed_gallery as run_embed_gallery
    from synthface.faces.gallery import prepare_out

    console = Console(stderr=True)
    prepare_out(out)  # before the (long) embedding, not after it
    _, faces_cfg, models_dir = load_face_options(config, overrides, models, detector, recognizer, det_size)

    def failed(row: dict) -> None:
        console.print(f"  failed: {row['image']}: {row['reason']} ({row['detail']})", highlight=False)

    with rate_bar("embedding", console=console) as progress:
        result = run_embed_gallery(images_dir, out, models_dir, faces_cfg, progress=progress, on_failed=failed)
    typer.echo(result.summary())


def face_pairs(
    images_dir: Path = typer.Argument(..., help="Folder of labelled photos."),
    pairs: Path = typer.Option(..., "--pairs", help="CSV image_a,image_b,same (0/1); only the file names are used, looked up in IMAGES_DIR."),
    identities: Path = typer.Option(None, "--identities", help="CSV image,identity (file names as above): also run the filter on candidate sets of these photos."),
    models: str = _models_opt,
    detector: str = _det_opt,
    recognizer: str = _rec_opt,
    det_size: int = typer.Option(None, "--det-size", help="Detector input size (default 640 for photos, faces.det_size with --as-generated)."),
    as_generated: bool = typer.Option(False, "--as-generated", help="First reframe each photo's face like a generated 512-px image (ArcFace framing)."),
    config: str = _config_opt,
    overrides: list[str] = _set_opt,
) -> None:
    """Measure a recognizer on labelled pairs, and the filter on candidate sets of real photos.

    Prints JSON: pair AUC and threshold band, accuracy at filter.tau_target, and (with
    --identities) the filter's acceptance at the config's thresholds: the numbers the filter
    defaults are read from (docs/faces.md)."""
    import json

    from eval.face_pairs import face_pairs_report

    cfg, faces_cfg, models_dir = load_face_options(config, overrides, models, detector, recognizer, det_size)
    if det_size is None:
        faces_cfg = _with_options(faces_cfg, {"det_size": faces_cfg.det_size if as_generated else PHOTO_DET_SIZE})
    # --as-generated: find each face in the photo at 640 px, then reframe it as a generated image would be
    finder_cfg = _with_options(faces_cfg, {"det_size": PHOTO_DET_SIZE}) if as_generated else None
    out = face_pairs_report(images_dir, pairs, identities, cfg.filter, faces_cfg, models_dir, finder_cfg=finder_cfg)
    typer.echo(json.dumps(out, indent=2, allow_nan=False))


def bench_faces(
    images_dir: Path = typer.Option(None, "--images", help="Photos to build generated-like 512-px faces from (default: the shared assets' faces)."),
    models: str = _models_opt,
    detector: str = _det_opt,
    recognizer: str = _rec_opt,
    det_sizes: str = typer.Option("128,256,640", "--det-sizes", help="Detector sizes to time; 640 is the baseline."),
    limit: int = typer.Option(61, "--limit", help="Use at most this many photos."),
    repeat: int = typer.Option(3, "--repeat", help="Timed passes per row (best is reported)."),
    config: str = _config_opt,
    overrides: list[str] = _set_opt,
) -> None:
    """Images/s through detect + align + embed on generated-like 512-px faces, per detector size.

    CPU rows always; CUDA rows too when onnxruntime-gpu sees a GPU. Baseline: 640-px detection,
    measured in the same run."""
    import onnxruntime as ort
    from rich.console import Console
    from rich.table import Table

    from synthface.errors import InputDataError
    from synthface.faces.analyzer import FaceAnalyzer
    from bench.faces import generated_like, time_analyzer
    from synthface.faces.images import list_images, read_rgb

    console = Console(width=max(120, Console().width))
    if images_dir is None:
        images_dir = Path(os.environ.get("SYNTHFACE_ASSETS", Path(__file__).resolve().parents[3] / "shared" / "assets")) / "faces" / "images"
    try:
        sizes = sorted({int(s) for s in det_sizes.split(",") if s.strip()} | {PHOTO_DET_SIZE})
    except ValueError:
        raise InputDataError(f"--det-sizes: expected comma-separated integers, got {det_sizes!r}") from None
    cfg, faces_cfg, models_dir = load_face_options(config, overrides, models, detector, recognizer, PHOTO_DET_SIZE)
    photos = [read_rgb(p) for p in list_images(images_dir)[:limit]]
    if not photos:
        raise InputDataError(f"no images in {images_dir}")
    finder = FaceAnalyzer.from_config(models_dir, faces_cfg)
    images, reference = [], []
    for photo, result in zip(photos, finder.analyze(photos)):
        made = generated_like(photo, result.landmarks) if result.landmarks is not None else None
        if made is not None:
            images.append(made[0])
            reference.append(made[1])
    if not images:
        raise InputDataError(f"no face found in the photos of {images_dir}")
    devices = ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])
    rows = []
    for device in devices:
        for size in sizes:
            c = faces_cfg.model_validate({**faces_cfg.model_dump(), "det_size": size, "device": device})
            rows.append(time_analyzer(FaceAnalyzer.from_config(models_dir, c), images, reference, f"{device} {size}px", repeat))
    baseline = {r.device: r for r in rows if r.det_size == PHOTO_DET_SIZE}
    table = Table(title=f"face analysis on {len(images)} generated-like 512-px faces ({os.cpu_count()} CPUs, load {load_average():.1f})",
                  title_justify="left")
    for col in ("device, det size", "faces found", "images/s", "ms/image", "detect s", "align s", "embed s", "landmark err", "speed vs 640"):
        table.add_column(col, justify="left" if col.startswith("device") else "right")
    for r in rows:
        base = baseline[r.device]
        table.add_row(r.name, f"{r.found}/{r.crops}", f"{r.images_per_s:.1f}", f"{r.ms_per_image:.1f}", f"{r.detect_s:.2f}",
                      f"{r.align_s:.2f}", f"{r.embed_s:.2f}", f"{r.landmark_err:.3f}",
                      f"{base.seconds / r.seconds:.2f}x" if r.seconds > 0 else "n/a")
    console.print(table)
    console.print(f"models: {finder.describe()['detector']} + {finder.describe()['recognizer']}; flip_average={faces_cfg.flip_average}; "
                  "images/s = images through detect + align + embed (best of --repeat); "
                  "landmark err = mean distance to the reference landmarks / inter-ocular distance; "
                  "'vs 640' = speed-up over 640-px detection in this run", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command("embed-gallery")(embed_gallery)
    app.command("face-pairs")(face_pairs)
    bench_app.command("faces")(bench_faces)
