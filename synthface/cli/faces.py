"""CLI commands of the face stage: `embed-gallery`, `face-pairs` (`bench faces` is in cli/bench.py).

Model files come from the factory config's ``faces`` section (names relative to
``models_dir``) unless ``--detector`` / ``--recognizer`` name files directly,
e.g. the shared test models:

    synthface embed-gallery ../shared/assets/faces/images --out gallery.npy \\
        --detector ../shared/assets/models/scrfd_500m_kps.onnx \\
        --recognizer ../shared/assets/models/mobilefacenet_arcface_128d.onnx
"""

from __future__ import annotations

from pathlib import Path

import typer

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


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command("embed-gallery")(embed_gallery)
    app.command("face-pairs")(face_pairs)
