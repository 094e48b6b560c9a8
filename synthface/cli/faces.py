"""CLI commands of the face stage: `embed-gallery`, `face-pairs` (`bench faces` is in cli/bench.py).

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


def _json_safe(value):
    """Plain JSON: NaN and infinities (a statistic of no pairs of a kind) become null."""
    import math

    import numpy as np

    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _load_config(config, overrides, models, detector, recognizer, det_size=None):
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
    import csv
    import time

    import numpy as np
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from synthface.errors import InputDataError
    from synthface.faces.analyzer import FaceAnalyzer
    from synthface.faces.embed_files import embed_files
    from synthface.faces.images import list_images

    console = Console(stderr=True)
    if out.suffix != ".npy":
        raise InputDataError(f"--out must be a .npy file (the report goes beside it as .csv), got {out}")
    try:  # before the (long) embedding, not after it
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputDataError(f"--out {out}: cannot create its folder ({exc.strerror or exc})") from None
    _, faces_cfg, models_dir = _load_config(config, overrides, models, detector, recognizer, det_size)
    paths = list_images(images_dir)
    if not paths:
        raise InputDataError(f"no images (.jpg, .png, ...) in {images_dir}")
    analyzer = FaceAnalyzer.from_config(models_dir, faces_cfg)

    report: list[dict] = []
    embeddings: list[np.ndarray] = []
    with Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("embed", total=len(paths), rate="")
        t0 = time.perf_counter()

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, rate=f"{done / (time.perf_counter() - t0):.1f} img/s")

        for f in embed_files(analyzer, paths, faces_cfg.batch_size, advance):  # report rows in file order
            row = {"image": f.path.name, "row": -1}
            if f.reason != "unreadable":  # an unreadable file was never analysed
                row.update(det_score=round(f.det_score, 4), num_faces=f.num_faces)
            if f.ok:
                row.update(row=len(embeddings), status="ok", reason="", detail=f.detail)
                embeddings.append(f.embedding)
            else:
                row.update(status="failed", reason=f.reason, detail=f.detail)
            report.append(row)

    failed = [r for r in report if r["status"] != "ok"]
    for r in failed:
        console.print(f"  failed: {r['image']}: {r['reason']} ({r['detail']})", highlight=False)
    if not embeddings:
        raise InputDataError(f"no face could be embedded from the {len(paths)} images in {images_dir}; nothing written")

    gallery = np.stack(embeddings).astype(np.float32)
    csv_path = out.with_suffix(".csv")
    fields = ["image", "row", "status", "reason", "det_score", "num_faces", "detail"]
    try:
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, gallery)
        os.replace(tmp, out)
        with open(csv_path.with_name(csv_path.name + ".tmp"), "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(report)
        os.replace(csv_path.with_name(csv_path.name + ".tmp"), csv_path)
    except OSError as exc:  # disk full, no permission, a folder in the way
        raise InputDataError(f"cannot write {out} / {csv_path.name}: {exc.strerror or exc}") from None
    typer.echo(
        f"embedded {len(embeddings)}/{len(paths)} images -> {out} ({gallery.shape[0]} x {gallery.shape[1]} float32); "
        f"{len(failed)} failed; per-image report {csv_path}"
    )


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
    import csv
    import json

    import numpy as np

    from synthface.errors import InputDataError
    from synthface.faces.analyzer import FaceAnalyzer
    from synthface.faces.images import read_rgb
    from synthface.filtering.evaluate import candidate_set_stats, centre_stats, pair_stats

    from bench.faces import generated_like

    cfg, faces_cfg, models_dir = _load_config(config, overrides, models, detector, recognizer, det_size)
    if det_size is None:
        faces_cfg = _with_options(faces_cfg, {"det_size": faces_cfg.det_size if as_generated else PHOTO_DET_SIZE})
    analyzer = FaceAnalyzer.from_config(models_dir, faces_cfg)

    def read_csv(path: Path, columns: tuple[str, ...]) -> list[dict]:
        if not path.is_file():
            raise InputDataError(f"file not found: {path}")
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise InputDataError(f"{path}: not a UTF-8 CSV file ({exc})") from None
        if not rows:
            raise InputDataError(f"{path}: no rows (expected a header {','.join(columns)} and one row per entry)")
        missing = [c for c in columns if c not in rows[0]]
        if missing:
            raise InputDataError(f"{path}: missing column(s) {', '.join(missing)} (expected {','.join(columns)})")
        return rows

    def same_flag(value: str | None, row: int) -> bool:
        if (value or "").strip() not in ("0", "1"):
            raise InputDataError(f"{pairs}: row {row}: 'same' must be 0 or 1, got {value!r}")
        return value.strip() == "1"

    pair_list = [
        (Path(r["image_a"] or "").name, Path(r["image_b"] or "").name, same_flag(r["same"], i + 2))
        for i, r in enumerate(read_csv(pairs, ("image_a", "image_b", "same")))
    ]
    labels = {}
    if identities is not None:
        # identity labels may be any text (names, ids); the statistics need integer classes
        rows = read_csv(identities, ("image", "identity"))
        codes = {label: k for k, label in enumerate(dict.fromkeys(str(r["identity"]).strip() for r in rows))}
        labels = {Path(r["image"] or "").name: codes[str(r["identity"]).strip()] for r in rows}
    names = sorted({n for a, b, _ in pair_list for n in (a, b)} | set(labels))
    images = [read_rgb(images_dir / n) for n in names]
    if as_generated:  # find each face in the photo at 640 px, then reframe it as a generated image would be
        finder_cfg = faces_cfg.model_validate({**faces_cfg.model_dump(), "det_size": PHOTO_DET_SIZE})
        found = FaceAnalyzer.from_config(models_dir, finder_cfg).analyze(images)
        images = [generated_like(img, r.landmarks)[0] if r.landmarks is not None else img for img, r in zip(images, found)]
    results = dict(zip(names, analyzer.analyze(images)))
    failed = {n: r.reason for n, r in results.items() if not r.ok}
    usable = [(a, b, s) for a, b, s in pair_list if a not in failed and b not in failed]
    sims = np.array([float(results[a].embedding @ results[b].embedding) for a, b, _ in usable])
    same = np.array([s for *_, s in usable])
    out = {
        "models": analyzer.describe(),
        "framing": "generated-like 512 px" if as_generated else "photos as they are",
        "images": len(names),
        "faces_found": len(names) - len(failed),
        "failed": failed,
        "pairs": pair_stats(sims, same, threshold=cfg.filter.tau_target),
    }
    if labels:
        named = [n for n in names if n in labels]
        res = [results[n] for n in named]
        lab = [labels[n] for n in named]
        out["candidate_sets_centre_only"] = candidate_set_stats(res, lab, cfg.filter.model_copy(update={"use_target": False})).as_dict()
        out["candidate_sets_with_target"] = candidate_set_stats(res, lab, cfg.filter, with_target=True).as_dict()
        ok = [i for i, r in enumerate(res) if r.ok]
        out["class_centres"] = centre_stats(np.stack([res[i].embedding for i in ok]), [lab[i] for i in ok])
    typer.echo(json.dumps(_json_safe(out), indent=2, allow_nan=False))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command("embed-gallery")(embed_gallery)
    app.command("face-pairs")(face_pairs)
