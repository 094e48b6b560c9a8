"""`synthface audit`: are any generated identities real people of a benchmark or a gallery?

The faces of verification ``.bin`` files (already aligned 112x112 crops) are embedded with
the run's own recognizer (the dataset config's ``faces.recognizer`` in its model folder,
the same ``flip_average`` setting), a real-photo gallery (``synthface embed-gallery``'s
.npy) is taken as it is, and every generated identity is compared by its class centre
(``shard-NNNNNN.centres.parquet``, the shard job's centre of the accepted images) with
every face. An identity whose centre is at least ``threshold`` similar to some face is
reported; ``drop`` removes those identities through the finalising step
(pipelines/finalise.py, reason ``benchmark_leak``), so plain readers never see them.

Writes ``audit.json`` (every match, per-source counts) and ``card/audit.png`` (the closest
pairs: a generated crop beside the benchmark face), then rebuilds the card, whose audit
section reads them.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.finalise import LEAK_REASON, finalise
from synthface.errors import InputDataError
from synthface.filtering.duplicates import neighbours
from synthface.shards.lock import OutputLock
from synthface.shards.manifest import AUDIT_FILE, DATASET_FILE
from synthface.shards.storage import Output
from synthface.shards.writer import KEY_PATTERN, committed_shards, load_centres, read_tar

log = logging.getLogger("synthface.audit")

AUDIT_PNG = "card/audit.png"
PAIRS_SHOWN = 8  # closest pairs per source in the picture


@dataclass
class Source:
    """Real faces to compare with: a benchmark's images, or a gallery's embeddings."""

    name: str
    embeddings: np.ndarray  # float32 [M, D], unit norm
    images: np.ndarray | None = None  # uint8 [M, 112, 112, 3] when there are pictures


@dataclass
class AuditResult:
    threshold: float
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    matches: list[dict[str, Any]] = field(default_factory=list)  # every (identity, source) within threshold
    dropped: list[int] = field(default_factory=list)


def load_recognizer(dataset: dict, models_dir: str | None = None):
    """The run's recognizer, from the dataset config (``faces.recognizer`` in ``models_dir``)."""
    from synthface.faces.config import FaceAnalysisConfig
    from synthface.faces.onnx_session import resolve_model_path
    from synthface.faces.recognizer import ArcFaceRecognizer

    cfg = dataset.get("config", {})
    faces = FaceAnalysisConfig.model_validate(cfg.get("faces", {}))
    path = resolve_model_path(models_dir or cfg.get("models_dir"), faces.recognizer, "faces.recognizer")
    return ArcFaceRecognizer.load(path, faces), faces


def bin_files(bins_dir: str | Path) -> list[Path]:
    if not Path(bins_dir).is_dir():
        raise InputDataError(f"--bins {bins_dir}: not a folder")
    paths = sorted(Path(bins_dir).glob("*.bin"))
    if not paths:
        raise InputDataError(f"--bins {bins_dir}: no .bin files there")
    return paths


def benchmark_sources(paths: list[Path], recognizer, flip_average: bool) -> list[Source]:
    """Each verification ``.bin``, read safely and embedded."""
    from eval.verification import load_bin

    out = []
    for path in paths:
        pairs = load_bin(path)
        out.append(Source(path.stem, recognizer.embed(pairs.images, flip_average=flip_average), pairs.images))
        log.info("embedded %d faces of %s", len(pairs.images), path.name)
    return out


def gallery_source(path: str | Path, dim: int) -> Source:
    from synthface.identity.gallery import load_gallery

    return Source(f"gallery:{Path(path).name}", load_gallery(path, dim=dim))


def compare(ids: np.ndarray, centres: np.ndarray, sources: list[Source], threshold: float) -> AuditResult:
    """Per source: each identity's most similar face, and each face's most similar identity."""
    result = AuditResult(threshold=threshold)
    for src in sources:
        if src.embeddings.shape[1] != centres.shape[1]:
            raise InputDataError(
                f"{src.name}: {src.embeddings.shape[1]}-d embeddings, but the dataset's class centres are "
                f"{centres.shape[1]}-d: embed it with the run's recognizer"
            )
        best_sim, best_face = (x[:, 0] for x in neighbours(centres, 1, others=src.embeddings))
        face_sim, _ = (x[:, 0] for x in neighbours(src.embeddings, 1, others=centres))
        hit = np.flatnonzero(best_sim >= threshold)
        result.sources[src.name] = {
            "faces": int(len(src.embeddings)),
            "identities_matched": int(len(hit)),
            "faces_matched": int((face_sim >= threshold).sum()),
            "max_similarity": round(float(best_sim.max()), 6) if len(best_sim) else None,
        }
        for row in hit:
            result.matches.append(
                {"id": int(ids[row]), "source": src.name, "face": int(best_face[row]),
                 "similarity": round(float(best_sim[row]), 6)}
            )
    result.matches.sort(key=lambda m: (-m["similarity"], m["id"], m["source"]))
    return result


def first_crops(output: Output, wanted: set[int]) -> dict[int, np.ndarray]:
    """One aligned crop per wanted identity, read from the shards that hold them."""
    from PIL import Image

    crops: dict[int, np.ndarray] = {}
    for stats in committed_shards(output, checksums=False).values():  # a report: `verify` checks the bytes
        if not wanted & set(stats.get("labels", [])):
            continue
        for key, members in sorted(read_tar(output.read_bytes(f"{stats['shard']}.tar")).items()):
            cid = int(KEY_PATTERN.match(key).group(1))
            if cid in wanted and cid not in crops:
                crops[cid] = np.asarray(Image.open(io.BytesIO(members["jpg"])).convert("RGB"))
    return crops


def pairs_png(result: AuditResult, crops: dict[int, np.ndarray], sources: list[Source]) -> bytes | None:
    """The closest pairs of each source: generated crop | benchmark face (when it has pictures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_source = {s.name: s for s in sources}
    shown = []
    for name in by_source:
        shown += [m for m in result.matches if m["source"] == name][:PAIRS_SHOWN]
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 2, figsize=(4, 2.1 * len(shown)), dpi=80, squeeze=False)
    for row, m in enumerate(shown):
        left, right = axes[row]
        if m["id"] in crops:
            left.imshow(crops[m["id"]])
        left.set_title(f"identity {m['id']}", fontsize=8)
        src = by_source[m["source"]]
        if src.images is not None:
            right.imshow(src.images[m["face"]])
        right.set_title(f"{m['source']} face {m['face']}: cos {m['similarity']:.3f}", fontsize=8)
        for ax in (left, right):
            ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def audit(
    out: str,
    bins_dir: str | None = None,
    gallery: str | None = None,
    threshold: float | None = None,
    drop: bool = False,
    models_dir: str | None = None,
    write_card: bool = True,
) -> AuditResult:
    """Compare the dataset's identities with benchmark and/or gallery faces (module doc)."""
    if not bins_dir and not gallery:
        raise InputDataError("audit: give --bins DIR and/or --gallery FILE")
    output = Output(out)
    if not output.exists(DATASET_FILE):
        raise InputDataError(f"{output.url_of(DATASET_FILE)} not found: audit runs on a generated dataset")
    dataset = output.read_json(DATASET_FILE)
    ids, centres = load_centres(output, committed_shards(output, checksums=False))  # a report: `verify` checks the bytes
    if len(ids) == 0:
        raise InputDataError(f"{output.url}: no identity holds any image; nothing to audit")
    if threshold is None:  # the run's own "this image shows this identity" threshold
        threshold = float(dataset["config"]["filter"]["tau_target"])
    sources: list[Source] = []
    recognizer_path = None
    if bins_dir:
        paths = bin_files(bins_dir)
        recognizer, faces = load_recognizer(dataset, models_dir)
        recognizer_path = str(recognizer.path)
        sources += benchmark_sources(paths, recognizer, faces.flip_average)
    if gallery:
        sources.append(gallery_source(gallery, centres.shape[1]))
    result = compare(ids, centres, sources, threshold)

    matched = sorted({m["id"] for m in result.matches})
    picture = pairs_png(result, first_crops(output, set(matched)), sources)
    if picture is not None:
        output.write_bytes(AUDIT_PNG, picture)
    elif output.exists(AUDIT_PNG):
        output.remove(AUDIT_PNG)
    if drop and matched:
        best = {}
        for m in result.matches:  # sorted most similar first: keep each identity's closest face
            best.setdefault(m["id"], m)
        with OutputLock(output, command="synthface audit --drop"):  # it rewrites shards: no generate beside it
            finalise(output, {cid: {"reason": LEAK_REASON, "source": m["source"], "face": m["face"],
                                    "similarity": m["similarity"]} for cid, m in best.items()})
        result.dropped = matched
    output.write_json(
        AUDIT_FILE,
        {
            "threshold": threshold,
            "recognizer": recognizer_path,
            "identities_audited": int(len(ids)),
            "sources": result.sources,
            "matches": result.matches,
            "dropped": result.dropped,
            "picture": AUDIT_PNG if picture is not None else None,
        },
    )
    if write_card:
        from synthface.shards.card import write_card as _write_card

        _write_card(output)
    return result
