"""Summaries of an identity bank: separation and gallery similarity, and a histogram."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthface.errors import OutputError
from synthface.identity.bank import IdentityBank


def _summary(values: np.ndarray) -> dict[str, float] | None:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "p99": float(np.quantile(values, 0.99)),
        "max": float(values.max()),
    }


def _floats(bank: IdentityBank, name: str) -> np.ndarray:
    if name not in bank.table.column_names:
        return np.zeros(0, dtype=np.float64)
    return bank.table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> NaN


def bank_stats(bank: IdentityBank) -> dict:
    """N, sampler, nearest-neighbour cosine and gallery cosine summaries, screen counts."""
    sampler = bank.table.column("sampler")[0].as_py() if len(bank) else None
    nn = _floats(bank, "nn_cosine")
    gallery = _floats(bank, "max_gallery_cosine")
    resampled = bank.table.column("resampled").to_numpy(zero_copy_only=False) if "resampled" in bank.table.column_names else None
    return {
        "num_identities": len(bank),
        "sampler": sampler,
        "seed": bank.metadata.get("seed"),
        "nn_cosine": _summary(nn),
        "max_gallery_cosine": _summary(gallery),
        "gallery": bank.metadata.get("gallery_for_similarity"),
        "screen": bank.metadata.get("screen"),
        "resampled": int(resampled.sum()) if resampled is not None else None,
        "nn_angle_min_degrees": float(np.degrees(np.arccos(np.clip(np.nanmax(nn), -1, 1)))) if np.isfinite(nn).any() else None,
    }


STAT_COLUMNS = ("min", "median", "mean", "p99", "max")


def stats_rows(st: dict) -> list[tuple[str, list[str]]]:
    """The summary table of :func:`bank_stats`: (row label, one cell per ``STAT_COLUMNS``)."""

    def cells(summary: dict | None) -> list[str]:
        return ["-" if summary is None or summary[k] is None else f"{summary[k]:.4f}" for k in STAT_COLUMNS]

    gallery = st["max_gallery_cosine"]
    if gallery:
        label = f"max to gallery ({Path(st['gallery']).name if st['gallery'] else 'gallery'})"
    else:
        label = "max to gallery"
    return [("nearest neighbour in bank", cells(st["nn_cosine"])), (label, cells(gallery or None))]


def stats_notes(st: dict) -> list[str]:
    """The lines printed under the table: the smallest angle, the screen counts."""
    notes = []
    if st["nn_angle_min_degrees"] is not None:
        notes.append(f"smallest angle between two identities: {st['nn_angle_min_degrees']:.2f} degrees")
    if st["screen"]:
        sc = st["screen"]
        notes.append(
            f"screens when sampled: rejected {sc['rejected_separation']} (separation), "
            f"{sc['rejected_novelty']} (novelty); resampled {sc['resampled']}"
        )
    return notes


def plot_histograms(bank: IdentityBank, path: str | Path) -> Path:
    """Write a PNG: histogram of nearest-neighbour cosine (and of gallery cosine when present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    nn = _floats(bank, "nn_cosine")
    nn = nn[np.isfinite(nn)]
    gallery = _floats(bank, "max_gallery_cosine")
    gallery = gallery[np.isfinite(gallery)]
    panels = 2 if len(gallery) else 1
    stats = bank_stats(bank)
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    if len(nn):
        ax.hist(nn, bins=min(100, max(10, len(nn) // 20)), color="#3b6ea8")
        ax.axvline(nn.max(), color="#c0392b", linestyle="--", label=f"max {nn.max():.3f}")
        ax.axvline(np.median(nn), color="#555555", linestyle=":", label=f"median {np.median(nn):.3f}")
        ax.legend()
    ax.set_xlabel("cosine to nearest other identity")
    ax.set_ylabel("identities")
    ax.set_title(f"{stats['sampler']} bank, N = {len(bank):,}: separation")
    if panels == 2:
        ax = axes[0, 1]
        ax.hist(gallery, bins=min(100, max(10, len(gallery) // 20)), color="#4a9a5b")
        ax.axvline(gallery.max(), color="#c0392b", linestyle="--", label=f"max {gallery.max():.3f}")
        ax.legend()
        ax.set_xlabel("max cosine to the real-identity gallery")
        ax.set_ylabel("identities")
        ax.set_title("gallery similarity")
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise OutputError(f"cannot write the histogram {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path
