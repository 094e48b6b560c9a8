"""The identity bank: sample it from a config, write it to Parquet, read it back.

Contract (docs/architecture.md): one row per identity with
``id`` (int64, dense from 0), ``embedding`` (512 float32, unit norm),
``sampler`` and ``sampler_settings`` (JSON), ``nn_cosine`` / ``nn_id`` (nearest
other identity in the bank), ``max_gallery_cosine`` (to the real-identity
gallery, null when none was given), plus ``gallery_anchor`` (gallery sampler)
and ``resampled`` (replaced by a screen). The file's schema metadata holds the
identity config, the run seed and the screen counts, so a bank says how it was
made. Same config and seed on the same kind of device -> byte-identical file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthface.errors import InputDataError, OutputError
from synthface.files import atomic_path
from synthface.identity.config import EMBEDDING_DIM, IdentityConfig
from synthface.version import synthface_version

BANK_FORMAT = "synthface.identity_bank/1"
METADATA_KEY = b"synthface.identity_bank"

Progress = Callable[[str, int, int], None]


@dataclass
class IdentityBank:
    ids: np.ndarray  # int64[N]
    embeddings: np.ndarray  # float32[N, 512]
    table: Any  # pyarrow.Table (all columns)
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, name: str) -> np.ndarray:
        return self.table.column(name).to_numpy(zero_copy_only=False)


@dataclass
class SampleReport:
    sampler: str
    num_identities: int
    device: str
    seconds: dict[str, float]
    screen: dict[str, int]
    packing: dict[str, float] | None = None
    band_redraws: int = 0


def sampler_settings(cfg: IdentityConfig) -> dict:
    """The settings that shaped the vectors (what goes in the ``sampler_settings`` column)."""
    settings: dict[str, Any] = {"sampler": cfg.sampler, "gallery": cfg.gallery}
    if cfg.sampler == "packed":
        settings["packed"] = cfg.packed.model_dump(mode="json")
    elif cfg.sampler == "gallery":
        settings["gallery_sampler"] = cfg.gallery_sampler.model_dump(mode="json")
    settings["screen"] = cfg.screen.model_dump(mode="json")
    return settings


BYTES_PER_VECTOR_COPIES = 4  # an estimate: the drawn vectors, the screened copy, the table, working blocks


def sample_bank(cfg: IdentityConfig, seed: int, progress: Progress | None = None) -> tuple[IdentityBank, SampleReport]:
    """Sample, pack (if asked) and screen ``cfg.num_identities`` identities from ``seed``."""
    import torch  # noqa: F401  (heavy: only when sampling)

    from synthface.identity import samplers
    from synthface.identity.gallery import load_gallery
    from synthface.neighbours import resolve_device
    from synthface.identity.packing import pack
    from synthface.identity.screens import screen

    n = cfg.num_identities
    # vectors, their screened copy and the Parquet table each hold n x 512 float32
    from synthface.errors import ConfigError
    from synthface.resources import require_memory

    require_memory(n * 512 * 4 * BYTES_PER_VECTOR_COPIES, f"'identity.num_identities' = {n:,}", ConfigError)
    device = resolve_device(cfg.device)
    seconds: dict[str, float] = {}
    gallery = load_gallery(cfg.gallery) if cfg.gallery else None
    novelty = load_gallery(cfg.screen.novelty_gallery) if cfg.screen.novelty_gallery else None

    t0 = time.perf_counter()
    anchors = np.full(n, -1, dtype=np.int64)
    band_redraws = 0
    packing_report = None
    if progress:
        progress("drawing", 0, 1)
    use_code = cfg.sampler == "packed" and cfg.packed.start == "code"
    code = messages = None
    next_message = n  # code banks: redraws take codewords after the first N, in order
    if cfg.sampler == "gallery":
        draws = samplers.gallery_vectors(seed, np.arange(n), gallery, cfg.gallery_sampler)
        vectors, anchors, band_redraws = draws.vectors, draws.anchors, draws.redraws
    elif use_code:
        from synthface.identity import codes

        family = codes.family_for(n)
        limit = cfg.screen.max_pair_similarity
        if limit is not None and limit < family.max_cosine:
            raise ConfigError(
                f"identity.screen.max_pair_similarity={limit} is below the {family.max_cosine:g} that "
                f"identity.packed.start 'code' guarantees at N={n:,} ({family.name} code); raise it or use start 'uniform'"
            )
        code = codes.seeded_code(seed, family)
        messages = np.arange(n, dtype=np.int64)
        vectors = codes.code_vectors(code, messages)
    else:
        vectors = samplers.uniform_vectors(seed, n)
    seconds["draw"] = time.perf_counter() - t0
    if cfg.sampler == "packed" and not use_code:
        t0 = time.perf_counter()
        vectors, rep = pack(vectors, cfg.packed, gallery=gallery, device=device, progress=progress)
        packing_report = rep.__dict__
        seconds["pack"] = time.perf_counter() - t0

    def redraw(ids: np.ndarray, screen_round: int) -> np.ndarray:
        nonlocal band_redraws
        if cfg.sampler == "gallery":
            d = samplers.gallery_vectors(
                seed, ids, gallery, cfg.gallery_sampler, purpose="identity.gallery.redraw", round_key=screen_round
            )
            anchors[ids] = d.anchors
            band_redraws += d.redraws
            return d.vectors
        if use_code:
            # fresh, unused codewords keep the separation guarantee
            nonlocal next_message
            if next_message + len(ids) > code.family.capacity:
                raise ConfigError(
                    f"identity.screen: the {code.family.name} code ran out of spare codewords for redraws "
                    f"({code.family.capacity:,}); loosen identity.screen.max_gallery_similarity"
                )
            messages[ids] = np.arange(next_message, next_message + len(ids))
            fresh = codes.code_vectors(code, messages[ids])
            next_message += len(ids)
            return fresh
        # a packed bank's rejects get fresh uniform vectors (re-packing would move everyone)
        return samplers.redraw_uniform(seed, ids, screen_round)

    t0 = time.perf_counter()
    if progress:
        progress("screening", 0, 1)
    screened = screen(
        vectors,
        cfg.screen,
        redraw,
        novelty_gallery=novelty,
        similarity_gallery=gallery,
        device=device,
        block_size=cfg.packed.block_size,
        nearest=not use_code,
    )
    seconds["screen"] = time.perf_counter() - t0
    if use_code:
        t0 = time.perf_counter()
        screened.nn_cosine, screened.nn_id = _code_neighbours(screened.embeddings, code, messages, device)
        seconds["neighbours"] = time.perf_counter() - t0

    resampled = np.zeros(n, dtype=bool)
    resampled[screened.report.resampled_ids] = True
    gallery_source = cfg.screen.novelty_gallery or cfg.gallery
    table = _make_table(
        embeddings=screened.embeddings,
        sampler=cfg.sampler,
        settings=sampler_settings(cfg),
        nn_cosine=screened.nn_cosine,
        nn_id=screened.nn_id,
        gallery_cosine=screened.gallery_cosine,
        anchors=anchors if cfg.sampler == "gallery" else None,
        resampled=resampled,
    )
    metadata = {
        "format": BANK_FORMAT,
        "seed": int(seed),
        "identity": cfg.model_dump(mode="json"),
        "screen": screened.report.as_dict(),
        "band_redraws": int(band_redraws),
        "gallery_for_similarity": gallery_source,
        "device": device.type,
        "synthface_version": synthface_version(),
    }
    if use_code:
        metadata["code"] = {"family": code.family.name, "max_cosine": code.family.max_cosine, "messages_used": next_message}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode("utf-8")})
    bank = IdentityBank(np.arange(n, dtype=np.int64), screened.embeddings, table, metadata)
    report = SampleReport(
        sampler=cfg.sampler,
        num_identities=n,
        device=str(device),
        seconds=seconds,
        screen=screened.report.as_dict(),
        packing=packing_report,
        band_redraws=band_redraws,
    )
    return bank, report


def _code_neighbours(x: np.ndarray, code, messages: np.ndarray, device) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest neighbours of a code bank: a codeword at the family's largest
    cosine is found from the code's structure (``codes.nearest_by_bound``); the
    rows without one (small banks, some redrawn rows) get a full exact search."""
    from synthface.identity.codes import nearest_by_bound
    from synthface.neighbours import search

    nn_id = nearest_by_bound(code, messages)
    rest = np.flatnonzero(nn_id < 0)
    if len(x) > 1 and len(rest):
        nn_id[rest] = search(x[rest], 1, base=x, query_ids=rest, device=device).ids[:, 0]
    nn_cos = np.full(len(x), np.nan, dtype=np.float32)
    if len(x) > 1:
        for s in range(0, len(x), 65_536):
            rows = slice(s, s + 65_536)
            nn_cos[rows] = np.einsum("ij,ij->i", x[rows], x[nn_id[rows]])
    return nn_cos, nn_id


def _make_table(
    *,
    embeddings: np.ndarray,
    sampler: str,
    settings: dict,
    nn_cosine: np.ndarray,
    nn_id: np.ndarray,
    gallery_cosine: np.ndarray | None,
    anchors: np.ndarray | None,
    resampled: np.ndarray,
):
    import pyarrow as pa

    n, dim = embeddings.shape
    flat = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1), type=pa.float32())
    settings_json = json.dumps(settings, sort_keys=True)
    nn_valid = np.isfinite(nn_cosine)
    return pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
            "sampler": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([sampler])),
            "sampler_settings": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(n, dtype=np.int32)), pa.array([settings_json])
            ),
            "nn_cosine": pa.array(nn_cosine.astype(np.float32), mask=~nn_valid),
            "nn_id": pa.array(nn_id.astype(np.int64), mask=~nn_valid),
            "max_gallery_cosine": pa.array(
                np.zeros(n, dtype=np.float32) if gallery_cosine is None else gallery_cosine.astype(np.float32),
                mask=np.ones(n, dtype=bool) if gallery_cosine is None else None,
            ),
            "gallery_anchor": pa.array(
                np.zeros(n, dtype=np.int64) if anchors is None else anchors,
                mask=np.ones(n, dtype=bool) if anchors is None else None,
            ),
            "resampled": pa.array(resampled),
        }
    )


def write_bank(bank: IdentityBank, path: str | Path) -> Path:
    """Write the bank atomically (temp file + rename): a crash leaves no half-written bank."""
    import pyarrow.parquet as pq

    from synthface.local_dirs import ensure_dir

    path = Path(path)
    ensure_dir(path.parent, f"identity bank {path}")
    try:
        with atomic_path(path) as tmp:
            pq.write_table(bank.table, tmp, compression="zstd", row_group_size=65_536)
    except OSError as exc:
        raise OutputError(f"cannot write identity bank {path}: {exc}") from None
    return path


REQUIRED_COLUMNS = ("id", "embedding", "sampler", "sampler_settings", "nn_cosine", "max_gallery_cosine")


SUMMARY_COLUMNS = ("id", "sampler", "nn_cosine", "nn_id", "max_gallery_cosine", "resampled")


def _open_bank_file(path: str | Path):
    """(ParquetFile, metadata) after checking the file exists, opens and has the required columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"identity bank not found: {path}")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputDataError(f"identity bank {path}: not a readable Parquet file ({exc})") from None
    names = pf.schema_arrow.names
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise InputDataError(f"identity bank {path}: missing column(s) {', '.join(missing)}")
    raw = (pf.schema_arrow.metadata or {}).get(METADATA_KEY)
    return pf, (json.loads(raw) if raw else {})


def read_bank_summary(path: str | Path) -> IdentityBank:
    """The bank without its embeddings (``embeddings`` is None): the per-identity
    statistics columns only, what ``ids stats`` needs. At 1M identities that is
    about 30 MB instead of 2 GB."""
    pf, metadata = _open_bank_file(path)
    columns = [c for c in SUMMARY_COLUMNS if c in pf.schema_arrow.names]
    table = pf.read(columns=columns)
    ids = table.column("id").to_numpy(zero_copy_only=False)
    if not np.issubdtype(ids.dtype, np.integer) or not np.array_equal(ids, np.arange(len(ids))):
        raise InputDataError(f"identity bank {path}: 'id' must be the integers 0..N-1 in order")
    return IdentityBank(ids.astype(np.int64), None, table, metadata)


def iter_bank(
    path: str | Path,
    batch_rows: int = 65_536,
    columns: tuple[str, ...] = ("id", "embedding"),
    dim: int | None = EMBEDDING_DIM,
):
    """Stream a bank in batches of rows: yields IdentityBank chunks (``ids`` and
    ``embeddings`` of those rows, ``table`` with ``columns``), each checked like
    ``read_bank``. Memory: one batch, whatever N is."""
    pf, metadata = _open_bank_file(path)
    columns = tuple(dict.fromkeys(("id", "embedding") + tuple(columns)))
    expected = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=list(columns)):
        import pyarrow as pa

        table = pa.Table.from_batches([batch])
        ids, embeddings = _checked_rows(table, path, first_id=expected, dim=dim)
        expected += len(ids)
        yield IdentityBank(ids, embeddings, table, metadata)


def _checked_rows(table, path, first_id: int = 0, dim: int | None = EMBEDDING_DIM) -> tuple[np.ndarray, np.ndarray]:
    """ids and embeddings of a table of bank rows, after the contract checks."""
    import pyarrow as pa

    ids = table.column("id").to_numpy(zero_copy_only=False)
    if not np.issubdtype(ids.dtype, np.integer) or not np.array_equal(ids, np.arange(first_id, first_id + len(ids))):
        raise InputDataError(f"identity bank {path}: 'id' must be the integers 0..N-1 in order")
    col = table.column("embedding").combine_chunks()
    if not pa.types.is_fixed_size_list(col.type) or col.null_count:
        raise InputDataError(f"identity bank {path}: 'embedding' must be non-null fixed-size lists of floats, got {col.type}")
    width = col.type.list_size
    if dim is not None and width != dim:
        raise InputDataError(
            f"identity bank {path} holds {width}-d embeddings, but {dim}-d are needed here (Arc2Face is conditioned "
            f"on 512-d ArcFace embeddings): build the bank with a {dim}-d recognizer (faces.recognizer, e.g. arcface.onnx)"
        )
    embeddings = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(ids), width)
    bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
    if len(bad):
        raise InputDataError(
            f"identity bank {path}: {len(bad)} embeddings hold NaN or inf (ids {(bad[:10] + first_id).tolist()})"
        )
    bad = np.flatnonzero(np.abs(np.linalg.norm(embeddings, axis=1) - 1) > 1e-3)
    if len(bad):
        raise InputDataError(
            f"identity bank {path}: {len(bad)} embeddings are not unit vectors (ids {(bad[:10] + first_id).tolist()}); "
            "a bank holds normalised ArcFace embeddings"
        )
    return ids.astype(np.int64), embeddings


def read_bank(path: str | Path, dim: int | None = EMBEDDING_DIM) -> IdentityBank:
    """Read and check a whole bank file: ids dense from 0, ``dim``-d finite unit embeddings.

    ``dim=None`` accepts any width: a bank made by `ids from-images` with a
    recognizer other than Arc2Face's 512-d ArcFace (summaries, screens) is
    readable, but generation asks for 512. For big banks, ``iter_bank``
    streams the rows and ``read_bank_summary`` reads the statistics columns
    without the embeddings.
    """
    pf, metadata = _open_bank_file(path)
    table = pf.read()
    ids, embeddings = _checked_rows(table, path, dim=dim)
    return IdentityBank(ids, embeddings, table, metadata)
