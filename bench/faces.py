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

import time
from dataclasses import dataclass

import numpy as np

from synthface.faces.align import GENERATED_SIZE, estimate_transform, generated_like, warp_to_template  # noqa: F401


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
