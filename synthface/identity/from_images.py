"""An identity bank from a folder per identity (`synthface ids from-images DIR`).

Layout: ``DIR/<identity name>/<image files>``, e.g. DigiFace-style renders.
Each image is embedded with the run's face analyzer (``faces:`` detector and
recognizer); an identity's vector is the normalised mean of its images'
embeddings. The bank keeps, per identity, its folder name, the images that
were used (paths relative to DIR) and their own embeddings, so generation can
start from them (``generation.reference``).

What is skipped is reported, never silently lost: files that are not images,
folders nested inside an identity folder, loose files directly in DIR, images
that cannot be read or hold no usable face; identities left with fewer than
``identity.from_images.min_images`` images are dropped. The bank then passes
the same screens as a sampled one (pairwise separation, novelty against a real
gallery), except that an offender cannot be redrawn: it is dropped. The
surviving identities get dense ids 0..N-1 in folder-name order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthface.errors import InputDataError
from synthface.files import files_sha256
from synthface.faces.images import IMAGE_SUFFIXES
from synthface.identity.bank import BANK_FORMAT, METADATA_KEY, IdentityBank, _make_table
from synthface.identity.config import IdentityConfig, ScreenConfig
from synthface.version import synthface_version

SAMPLER = "images"
Progress = Callable[[int, int], None]


@dataclass
class Skip:
    """One file, folder or identity left out, and why."""

    path: str  # relative to DIR
    reason: str
    detail: str = ""

    def as_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason, "detail": self.detail}


@dataclass
class FolderScan:
    identities: list[tuple[str, list[Path]]]  # (folder name, image paths), sorted by name
    skipped: list[Skip] = field(default_factory=list)


def scan_identity_folders(root: str | Path) -> FolderScan:
    """The identity folders of ``root`` and their image files; everything else is a reported skip."""
    root = Path(root)
    if not root.is_dir():
        raise InputDataError(f"identity image folder not found: {root}")
    identities: list[tuple[str, list[Path]]] = []
    skipped: list[Skip] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue  # .DS_Store, .git: not the user's data
        if not entry.is_dir():
            skipped.append(Skip(entry.name, "not_in_identity_folder", "files directly in DIR are ignored: one folder per identity"))
            continue
        images: list[Path] = []
        for item in sorted(entry.iterdir()):
            if item.name.startswith("."):
                continue
            rel = f"{entry.name}/{item.name}"
            if item.is_dir():
                skipped.append(Skip(rel, "nested_folder", "folders inside an identity folder are not read"))
            elif item.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(Skip(rel, "not_an_image", f"suffix not one of {', '.join(IMAGE_SUFFIXES)}"))
            else:
                images.append(item)
        identities.append((entry.name, images))
    if not identities:
        raise InputDataError(f"{root}: no identity folders (expected {root}/<identity>/<images>)")
    return FolderScan(identities, skipped)


@dataclass
class ImagesReport:
    folders: int
    images_found: int
    images_embedded: int
    identities: int
    embedding_dim: int
    skipped: list[Skip]  # files and folders
    dropped: list[Skip]  # identities
    screen: dict

    def as_dict(self) -> dict:
        return {
            "folders": self.folders,
            "images_found": self.images_found,
            "images_embedded": self.images_embedded,
            "identities": self.identities,
            "embedding_dim": self.embedding_dim,
            "skipped": [s.as_dict() for s in self.skipped],
            "dropped": [s.as_dict() for s in self.dropped],
            "screen": self.screen,
        }

    def lines(self, out) -> list[str]:
        """What ``ids from-images`` prints: skipped files, dropped identities, the summary, notes."""
        lines = [f"  skipped {s.path}: {s.reason}" + (f" ({s.detail})" if s.detail else "") for s in self.skipped]
        lines += [f"  dropped identity {s.path}: {s.reason} ({s.detail})" for s in self.dropped]
        sc = self.screen
        lines.append(
            f"wrote {out}: {self.identities} identities from {self.folders} folders "
            f"({self.images_embedded}/{self.images_found} images embedded, {self.embedding_dim}-d); "
            f"{len(self.skipped)} files skipped, {len(self.dropped)} identities dropped "
            f"(screens: {sc['rejected_separation']} separation, {sc['rejected_novelty']} novelty)"
        )
        if self.embedding_dim != 512:
            lines.append(f"note: {self.embedding_dim}-d vectors: generation needs a bank made with a 512-d recognizer (Arc2Face's arcface.onnx)")
        return lines


def bank_from_images(
    root: str | Path,
    analyzer,
    cfg: IdentityConfig,
    seed: int,
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> tuple[IdentityBank, ImagesReport]:
    """Embed every identity folder of ``root`` and build the bank (nothing is written here)."""
    from synthface.faces.embed_files import embed_files
    from synthface.identity.gallery import load_gallery

    root = Path(root).resolve()
    scan = scan_identity_folders(root)
    skipped = list(scan.skipped)
    # Check the novelty gallery before the (long) embedding pass.
    dim = int(analyzer.embedding_dim)
    novelty = load_gallery(cfg.screen.novelty_gallery, dim=dim) if cfg.screen.novelty_gallery else None

    paths = [p for _, images in scan.identities for p in images]
    embedded = {f.path: f for f in embed_files(analyzer, paths, batch_size, progress)}
    names: list[str] = []
    image_lists: list[list[str]] = []
    image_embs: list[np.ndarray] = []
    dropped: list[Skip] = []
    min_images = cfg.from_images.min_images
    for name, images in scan.identities:
        good = []
        for p in images:
            f = embedded[p]
            if f.ok:
                good.append(f)
            else:
                skipped.append(Skip(f"{name}/{p.name}", f.reason, f.detail))
        if len(good) < min_images:
            dropped.append(
                Skip(name, "too_few_images", f"{len(good)} usable of {len(images)}; identity.from_images.min_images is {min_images}")
            )
            continue
        names.append(name)
        image_lists.append([f"{name}/{f.path.name}" for f in good])
        image_embs.append(np.stack([f.embedding for f in good]).astype(np.float32))
    images_embedded = sum(1 for f in embedded.values() if f.ok)
    if not names:
        raise InputDataError(
            f"{root}: no identity has {min_images} or more usable images ({len(scan.identities)} folders, "
            f"{images_embedded} of {len(paths)} images embedded); nothing written"
        )
    vectors = np.stack([_unit(e.mean(axis=0)) for e in image_embs]).astype(np.float32)

    keep, nn_cos, nn_idx, gal_cos, screen_counts = screen_by_dropping(vectors, cfg.screen, novelty)
    for i in np.flatnonzero(~keep):
        kind, cos, other = screen_counts["why"][int(i)]
        if kind == "novelty":
            detail = f"cosine {cos:.3f} to the novelty gallery > identity.screen.max_gallery_similarity"
        else:
            detail = f"cosine {cos:.3f} to identity {names[other]!r} > identity.screen.max_pair_similarity"
        dropped.append(Skip(names[i], kind, detail))
    order = np.flatnonzero(keep)
    remap = -np.ones(len(names), dtype=np.int64)
    remap[order] = np.arange(len(order))
    names = [names[i] for i in order]
    image_lists = [image_lists[i] for i in order]
    image_embs = [image_embs[i] for i in order]
    vectors = vectors[order]
    settings = {"sampler": SAMPLER, "from_images": cfg.from_images.model_dump(mode="json"), "screen": cfg.screen.model_dump(mode="json")}
    table = _make_table(
        embeddings=vectors,
        sampler=SAMPLER,
        settings=settings,
        nn_cosine=nn_cos[order],
        nn_id=np.where(nn_idx[order] >= 0, remap[np.maximum(nn_idx[order], 0)], -1),
        gallery_cosine=None if gal_cos is None else gal_cos[order],
        anchors=None,
        resampled=np.zeros(len(order), dtype=bool),
    )
    table = _add_image_columns(table, names, image_lists, image_embs)
    screen_report = {k: v for k, v in screen_counts.items() if k != "why"}
    report = ImagesReport(
        folders=len(scan.identities),
        images_found=len(paths),
        images_embedded=images_embedded,
        identities=len(names),
        embedding_dim=dim,
        skipped=skipped,
        dropped=dropped,
        screen=screen_report,
    )
    metadata = {
        "format": BANK_FORMAT,
        "seed": int(seed),
        "source": "images",
        "images_root": str(root),
        "identity": cfg.model_dump(mode="json"),
        "screen": screen_report,
        "gallery_for_similarity": cfg.screen.novelty_gallery,
        "recognizer": _describe(analyzer),
        "embedding_dim": dim,
        "skipped": [s.as_dict() for s in skipped],
        "dropped": [s.as_dict() for s in dropped],
        "synthface_version": synthface_version(),
    }
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode("utf-8")})
    bank = IdentityBank(np.arange(len(names), dtype=np.int64), vectors, table, metadata)
    return bank, report


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _describe(analyzer) -> dict:
    try:
        info = analyzer.describe()
        return {k: info[k] for k in ("detector", "recognizer", "embedding_dim", "flip_average") if k in info}
    except AttributeError:
        return {"embedding_dim": int(analyzer.embedding_dim)}


def screen_by_dropping(vectors: np.ndarray, cfg: ScreenConfig, novelty: np.ndarray | None):
    """The bank screens for fixed vectors: offenders are dropped, not redrawn.

    Novelty offenders go first; then, of a too-close pair, the higher index is
    dropped (as :func:`synthface.identity.screens.screen` rejects it) and the
    neighbours are measured again among the survivors, until none is too close.
    Returns (keep mask, nn cosine, nn index, gallery cosine or None, counts);
    ``counts["why"]`` maps each dropped index to (screen, cosine, other index).
    """
    from synthface.neighbours import max_similarity_to, nearest_neighbour

    n = len(vectors)
    keep = np.ones(n, dtype=bool)
    why: dict[int, str] = {}
    gal_cos = None
    if novelty is not None:
        gal_cos, _ = max_similarity_to(vectors, novelty)
        for i in np.flatnonzero(gal_cos > cfg.max_gallery_similarity):
            keep[i] = False
            why[int(i)] = ("novelty", float(gal_cos[i]), -1)
    rounds = 0
    while True:
        alive = np.flatnonzero(keep)
        sims, idx = nearest_neighbour(vectors[alive])
        nn_cos = np.full(n, np.nan, dtype=np.float32)
        nn_idx = np.full(n, -1, dtype=np.int64)
        nn_cos[alive] = sims
        nn_idx[alive] = np.where(idx >= 0, alive[np.maximum(idx, 0)], -1)
        if cfg.max_pair_similarity is None or len(alive) < 2:
            break
        too_close = (nn_cos[alive] > cfg.max_pair_similarity) & (nn_idx[alive] < alive)
        if not too_close.any():
            break
        rounds += 1
        for i in alive[too_close]:
            keep[i] = False
            why[int(i)] = ("separation", float(nn_cos[i]), int(nn_idx[i]))
    counts = {
        "rounds": rounds,
        "rejected_separation": sum(1 for w in why.values() if w[0] == "separation"),
        "rejected_novelty": sum(1 for w in why.values() if w[0] == "novelty"),
        "resampled": 0,
        "why": why,
    }
    return keep, nn_cos, nn_idx, gal_cos, counts


def _add_image_columns(table, names: list[str], image_lists: list[list[str]], image_embs: list[np.ndarray]):
    import pyarrow as pa

    dim = image_embs[0].shape[1]
    flat = pa.array(np.concatenate(image_embs).reshape(-1), type=pa.float32())
    per_image = pa.FixedSizeListArray.from_arrays(flat, dim)
    offsets = pa.array(np.concatenate([[0], np.cumsum([len(e) for e in image_embs])]).astype(np.int32))
    table = table.append_column("name", pa.array(names, type=pa.string()))
    table = table.append_column("images", pa.array(image_lists, type=pa.list_(pa.string())))
    return table.append_column("image_embeddings", pa.ListArray.from_arrays(offsets, per_image))


@dataclass
class ReferenceImages:
    """Per identity of an image bank: its images (paths) and their embeddings."""

    root: Path
    images: list[list[str]]  # relative to root
    embeddings: list[np.ndarray]  # float32[n_images, D] each

    def path(self, identity_id: int, k: int) -> Path:
        return self.root / self.images[identity_id][k]

    def digest(self, num_ids: int | None = None) -> str:
        """sha256 over the name and size of every image listed for the first ``num_ids``
        identities (all by default). Sizes, not bytes: an image bank can list millions of
        files, and the driver computes this at every start; a replaced image almost always
        changes size. A missing or unreadable file is a clear error."""
        names = [name for names in self.images[:num_ids] for name in names]
        try:
            return files_sha256(self.root, names, contents=False)
        except OSError as exc:
            raise InputDataError(
                f"generation.reference: {exc.filename or exc}, listed in the bank, cannot be read from {self.root} "
                f"({exc.strerror or exc})"
            ) from None


def read_reference_images(bank_path: str | Path, root: str | Path | None = None) -> ReferenceImages:
    """The image columns of a bank made by `ids from-images` (``root`` overrides the recorded folder)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bank_path = Path(bank_path)
    try:
        table = pq.read_table(bank_path)
    except (pa.ArrowException, OSError) as exc:
        raise InputDataError(f"identity bank {bank_path}: not a readable Parquet file ({exc})") from None
    if "images" not in table.column_names or "image_embeddings" not in table.column_names:
        raise InputDataError(
            f"identity bank {bank_path} has no per-identity images (no 'images' column): generation.reference needs "
            "a bank made by `synthface ids from-images DIR`"
        )
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    meta = json.loads(raw) if raw else {}
    recorded = root or meta.get("images_root")
    if not recorded:
        raise InputDataError(
            f"identity bank {bank_path} records no image folder; set generation.reference.images_root"
        )
    folder = Path(recorded)
    if not folder.is_dir():
        raise InputDataError(
            f"identity bank {bank_path}: its image folder {folder} is not here; set generation.reference.images_root "
            "to where the identity folders are"
        )
    images = table.column("images").to_pylist()
    col = table.column("image_embeddings").combine_chunks()
    dim = col.type.value_type.list_size
    flat = col.flatten().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    counts = [len(x) for x in images]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    per_id = [flat[offsets[i] * dim : offsets[i + 1] * dim].reshape(counts[i], dim) for i in range(len(images))]
    return ReferenceImages(folder, images, per_id)
