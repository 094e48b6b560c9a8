"""The face-analysis benchmark: crops per second for detect + align + embed.

Generated images are tight 512-px faces, unlike the photos we have, so the
benchmark first turns real photos into generated-like inputs: each photo's face
(found by a 640-px detection) is warped so its landmarks sit on the ArcFace
template scaled to 512 px, which is how Arc2Face frames its outputs. Those
landmark positions are then the reference for the landmark error reported
beside each speed. The baseline measured in the same run is detection at 640 px
(the usual insightface setting).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.runner import assets_dir, load_average, warn_if_loaded
from synthface.faces.align import estimate_transform, generated_like, warp_to_template

BASELINE_DET_SIZE = 640  # the usual insightface detection size: every run measures it as the baseline


@dataclass
class BenchRow:
    name: str
    device: str
    det_size: int
    crops: int
    found: int
    seconds: float
    detect_s: float
    align_s: float
    embed_s: float
    landmark_err: float  # mean landmark error / inter-ocular distance, vs the reference

    @property
    def images_per_s(self) -> float:
        return self.crops / self.seconds if self.seconds > 0 else float("nan")

    @property
    def ms_per_image(self) -> float:
        return 1000 * self.seconds / max(1, self.crops)


def time_analyzer(analyzer, images: list[np.ndarray], reference: list[np.ndarray], name: str, repeat: int = 1) -> BenchRow:
    """Time ``analyzer.analyze`` end to end (best of ``repeat``), and its three parts once."""
    analyzer.analyze(images[:2])  # warm-up: session initialisation, allocations
    best = float("inf")
    results = None
    for _ in range(repeat):
        t = time.perf_counter()
        results = analyzer.analyze(images)
        best = min(best, time.perf_counter() - t)
    t = time.perf_counter()
    dets = analyzer.detector.detect(images)
    detect_s = time.perf_counter() - t
    t = time.perf_counter()
    crops = []
    for img, det in zip(images, dets):
        if len(det):
            m = estimate_transform(det.landmarks[0])
            if m is not None:
                crops.append(warp_to_template(img, m))
    align_s = time.perf_counter() - t
    t = time.perf_counter()
    if crops:
        analyzer.recognizer.embed(np.stack(crops), flip_average=analyzer.cfg.flip_average)
    embed_s = time.perf_counter() - t
    errs = []
    for r, ref in zip(results, reference):
        if r.landmarks is not None:
            iod = float(np.linalg.norm(ref[0] - ref[1]))
            errs.append(float(np.linalg.norm(r.landmarks - ref, axis=1).mean()) / iod)
    providers = analyzer.detector.session.get_providers()
    return BenchRow(
        name=name,
        device="cuda" if providers and providers[0].startswith("CUDA") else "cpu",
        det_size=analyzer.detector.input_hw[0],
        crops=len(images),
        found=sum(r.ok for r in results),
        seconds=best,
        detect_s=detect_s,
        align_s=align_s,
        embed_s=embed_s,
        landmark_err=float(np.mean(errs)) if errs else float("nan"),
    )


def default_images_dir() -> Path:
    """The shared assets' face photos."""
    return assets_dir() / "faces" / "images"


def faces_bench(images_dir: Path | None, faces_cfg, models_dir, det_sizes: list[int] | None, limit: int, repeat: int) -> list[BenchRow]:
    """Generated-like faces from the photos, then one row per (device, detector size), printed
    as a table with the speed-up over 640-px detection. CUDA rows when onnxruntime sees a GPU."""
    import onnxruntime as ort
    from rich.console import Console
    from rich.table import Table

    from synthface.errors import InputDataError
    from synthface.faces.analyzer import FaceAnalyzer
    from synthface.faces.images import list_images, read_rgb

    console = Console(width=max(120, Console().width))
    images_dir = images_dir or default_images_dir()
    sizes = sorted(set(det_sizes or ()) | {BASELINE_DET_SIZE})
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
    baseline = {r.device: r for r in rows if r.det_size == BASELINE_DET_SIZE}
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
    warn_if_loaded(lambda line: console.print(line, highlight=False))
    return rows
