"""Writing one shard: ``shard-NNNNNN.tar`` + ``.parquet``, then ``.json`` (commit).

The tar follows WebDataset conventions: every sample is a group of members
``{key}.jpg`` (aligned 112x112 crop), ``{key}.cls`` (label as decimal text),
``{key}.json`` (metadata) and optionally ``{key}.full.jpg``. Members are
written sorted by key with fixed mtime/uid/gid/mode, so the same samples give
byte-identical tars on any machine and rerun.

The stats file is written last and atomically; it records the size and
sha256 of the tar and the parquet (and the run's config hash). A shard is
committed exactly when its ``.json`` exists and both files match it (see
:func:`shard_problem`). Anything else is leftovers of an interrupted attempt,
or damage, and is redone.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from synthface.errors import InputDataError
from synthface.shards.storage import Output

ALIGNED_SIZE = 112
TAR_MTIME = 0  # fixed member timestamps: byte-identical tars across reruns
KEY_PATTERN = re.compile(r"^(\d{7})_(\d{3})$")
SHARD_PATTERN = re.compile(r"^shard-(\d{6})\.(tar|parquet|json|centres\.parquet)$")
# A local writer's temp files (synthface.files: ``.{name}.{random}.tmp``; before it,
# ``{name}.tmp-{hex}``): what a writer killed mid-write leaves behind.
TMP_PATTERN = re.compile(
    r"^(\.shard-\d{6}\.(tar|parquet|json|centres\.parquet)\.\w+\.tmp"
    r"|shard-\d{6}\.(tar|parquet|json|centres\.parquet)\.tmp-[0-9a-f]+)$"
)
CENTRES_SUFFIX = ".centres.parquet"  # per shard: each class's centre, for the dataset-wide checks

# Columns of the per-shard candidate table (one row per generated image).
CANDIDATE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("id", pa.int64()),
        ("index", pa.int32()),
        ("seed", pa.int64()),
        ("accepted", pa.bool_()),
        ("reason", pa.string()),
        ("sim_target", pa.float32()),
        ("sim_centre", pa.float32()),
        ("det_score", pa.float32()),
        ("num_faces", pa.int32()),
        ("class_kept", pa.bool_()),
        ("class_reason", pa.string()),
        # generation.reference: the identity image the candidate started from (relative
        # to the bank's image folder) and the noise strength; null when the mode is off
        ("reference_image", pa.string()),
        ("reference_strength", pa.float32()),
        # head pose of the detected face, degrees (synthface.faces.head_pose); null without a face
        ("yaw", pa.float32()),
        ("pitch", pa.float32()),
        ("roll", pa.float32()),
        # per-candidate controls (generation.expression / generation.pose); null when off
        ("expression", pa.list_(pa.float32())),
        ("expression_row", pa.int32()),
        ("pose_control", pa.string()),
        # small JPEG of a rejected candidate's aligned face (run.rejected_thumbnails), for the card
        ("thumb", pa.binary()),
    ]
)
THUMB_SIZE = 56
THUMB_QUALITY = 80


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def sample_key(identity_id: int, image_index: int) -> str:
    if not 0 <= identity_id < 10**7 or not 0 <= image_index < 1000:
        raise ValueError(f"key out of range: id {identity_id}, index {image_index}")
    return f"{identity_id:07d}_{image_index:03d}"


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """RGB uint8 -> JPEG with Huffman tables fitted to the image (``optimize``): the same
    pixels when decoded, about 7 % fewer bytes at quality 95, and 2-3 % less CPU to decode
    in the training reader, for about 0.1 ms more per 112 px crop here (docs/benchmark.md)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def thumbnail_jpeg(aligned: np.ndarray) -> bytes:
    """A THUMB_SIZE px JPEG of an aligned crop (~1 KB)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(aligned, np.uint8)).resize((THUMB_SIZE, THUMB_SIZE), Image.BILINEAR).save(
        buf, format="JPEG", quality=THUMB_QUALITY
    )
    return buf.getvalue()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default).encode("utf-8")


@dataclass
class _Sample:
    key: str
    label: int
    members: dict[str, bytes] = field(default_factory=dict)


class ShardWriter:
    """Collects one shard's samples and candidate rows, then commits them.

    Samples are kept encoded in memory (a shard is tens of MB at most) and
    written as whole files by :meth:`commit`, so a crash mid-shard leaves no
    committed half-shard.
    """

    def __init__(self, output: Output, shard_index: int, jpeg_quality: int = 95):
        self.output = output
        self.shard_index = shard_index
        self.name = shard_name(shard_index)
        self.jpeg_quality = jpeg_quality
        self._samples: dict[str, _Sample] = {}
        self._candidates: list[dict[str, Any]] = []
        self._centres: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def num_samples(self) -> int:
        return len(self._samples)

    def add_sample(
        self,
        identity_id: int,
        image_index: int,
        aligned: np.ndarray,
        metadata: dict[str, Any],
        full_image: np.ndarray | bytes | None = None,
    ) -> str:
        """Add an accepted image; its label (``cls``) is its identity id.

        ``full_image`` (optional) is the generated image, as an array or already JPEG-encoded.
        """
        key = sample_key(identity_id, image_index)
        if key in self._samples:
            raise ValueError(f"duplicate sample key {key} in {self.name}")
        if aligned.shape[:2] != (ALIGNED_SIZE, ALIGNED_SIZE):
            raise ValueError(f"{key}: aligned crop must be 112x112, got {aligned.shape}")
        sample = _Sample(key=key, label=int(identity_id))
        sample.members["cls"] = str(int(identity_id)).encode("ascii")
        sample.members["jpg"] = encode_jpeg(aligned, self.jpeg_quality)
        sample.members["json"] = to_json_bytes({"key": key, "id": int(identity_id), "index": int(image_index), **metadata})
        if full_image is not None:
            sample.members["full.jpg"] = (
                full_image if isinstance(full_image, bytes) else encode_jpeg(full_image, self.jpeg_quality)
            )
        self._samples[key] = sample
        return key

    def add_candidate(self, row: dict[str, Any]) -> None:
        """Record one generated image, accepted or not (a row of the parquet)."""
        self._candidates.append({name: row.get(name) for name in CANDIDATE_SCHEMA.names})

    def set_centres(self, ids: np.ndarray, centres: np.ndarray) -> None:
        """Record the class centres (float32[K, D], unit norm) of the classes ``ids`` that
        hold samples; the dataset-wide duplicate check and the audit read them back."""
        self._centres = (np.asarray(ids, np.int64).reshape(-1), np.asarray(centres, np.float32))

    def tar_bytes(self) -> bytes:
        return tar_bytes({key: s.members for key, s in self._samples.items()})

    def parquet_bytes(self) -> bytes:
        rows = sorted(self._candidates, key=lambda r: (r["id"], r["index"]))
        table = pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()

    def commit(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Write tar, parquet, then the stats file (the commit marker). Returns the stats."""
        stats = dict(stats)
        stats.update(
            shard=self.name,
            shard_index=self.shard_index,
            num_samples=self.num_samples,
            num_candidates=len(self._candidates),
            labels=sorted({s.label for s in self._samples.values()}),
        )
        tar, parquet = self.tar_bytes(), self.parquet_bytes()
        stats["files"] = {"tar": file_record(tar), "parquet": file_record(parquet)}
        self.output.write_bytes(f"{self.name}.tar", tar)
        self.output.write_bytes(f"{self.name}.parquet", parquet)
        if self._centres is not None:
            self.output.write_bytes(f"{self.name}{CENTRES_SUFFIX}", centres_bytes(*self._centres))
        stats["finished_at"] = round(time.time(), 3)
        self.output.write_json(f"{self.name}.json", stats)  # last: the commit marker
        return stats


def tar_bytes(samples: dict[str, dict[str, bytes]]) -> bytes:
    """A WebDataset tar of ``{key: {ext: bytes}}``: members sorted, fixed mtime/uid/gid/mode.

    webdataset's ``TarWriter`` writes each sample's members sorted by extension, with the
    mtime, mode and user/group names given here (uid/gid stay tarfile's 0). It ignores its
    ``format`` argument (webdataset 1.0: tarfile's default, PAX), but a PAX tar of short ASCII
    names like our keys has no extended headers: its members are plain ustar headers, the
    same bytes as ``tarfile.USTAR_FORMAT`` (tests/test_shards_writer.py checks this).
    """
    from webdataset import TarWriter  # its package import pulls in torch: only where shards are written

    buf = io.BytesIO()
    with TarWriter(buf, user="", group="", mode=0o644, mtime=TAR_MTIME, encoder=False, format="USTAR_FORMAT") as tar:
        for key in sorted(samples):
            tar.write({"__key__": key, **samples[key]})
    return buf.getvalue()


def read_tar(data: bytes) -> dict[str, dict[str, bytes]]:
    """``{key: {ext: bytes}}`` of a shard tar; raises tarfile.TarError on a damaged one."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            f = tar.extractfile(member)
            samples.setdefault(key, {})[ext] = f.read() if f else b""
    return samples


def centres_bytes(ids: np.ndarray, centres: np.ndarray) -> bytes:
    """The centres file: one row per class, ``id`` and ``centre`` (fixed-size float32 list)."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    centres = np.asarray(centres, np.float32).reshape(len(ids), -1)
    order = np.argsort(ids, kind="stable")
    ids, centres = ids[order], centres[order]
    dim = centres.shape[1] if len(ids) else 0
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "centre": pa.FixedSizeListArray.from_arrays(pa.array(centres.reshape(-1), pa.float32()), max(dim, 1))
            if len(ids)
            else pa.array([], pa.list_(pa.float32(), 1)),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def read_centres(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64[K], centres float32[K, D]) from a centres file."""
    table = pq.read_table(io.BytesIO(data))
    ids = table["id"].to_numpy().astype(np.int64)
    column = table["centre"].combine_chunks()
    dim = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return ids, values.reshape(len(ids), dim)


def load_centres(output: Output, committed: dict[int, dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, centres) of every class that holds samples now, in id order."""
    all_ids, all_centres = [], []
    for index in sorted(committed):
        stats = committed[index]
        labels = set(int(x) for x in stats.get("labels", []))
        if not labels:
            continue
        name = f"{stats['shard']}{CENTRES_SUFFIX}"
        if not output.exists(name):
            raise InputDataError(
                f"{output.url_of(name)} is missing: this shard was written before class centres were "
                "recorded; regenerate it (delete its .json and rerun generate)"
            )
        ids, centres = read_centres(output.read_bytes(name))
        keep = np.isin(ids, list(labels))
        if int(keep.sum()) != len(labels):
            raise InputDataError(f"{output.url_of(name)} lacks the centres of some classes in {stats['shard']}.tar")
        all_ids.append(ids[keep])
        all_centres.append(centres[keep])
    if not all_ids:
        return np.empty(0, np.int64), np.empty((0, 0), np.float32)
    ids, centres = np.concatenate(all_ids), np.concatenate(all_centres)
    order = np.argsort(ids, kind="stable")
    return ids[order], centres[order]


SHARD_FILES = ("tar", "parquet")  # what a shard's stats["files"] describes


def file_record(data: bytes) -> dict[str, Any]:
    """What a shard's stats record of one of its files (whoever rewrites a shard file
    must rewrite this record too, or the shard stops counting as committed)."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def shard_problem(
    output: Output,
    stats: Any,
    sizes: dict[str, int],
    config_hash: str | None = None,
    checksums: bool = True,
    contents: dict[str, bytes] | None = None,
) -> str | None:
    """Why a shard with these stats is not committed, or None when it is.

    ``sizes``: file name -> size from one listing of the output. Stats written
    before shards recorded their files (no ``files`` key) are trusted when the
    files exist. ``contents``: file name -> bytes the caller has already read
    (verify), so they are hashed without a second download.
    """
    if not isinstance(stats, dict) or "shard" not in stats:
        return "its stats file is not a shard's stats"
    recorded = stats.get("config_hash")  # None: written without one (older shards, stage tests)
    if config_hash is not None and recorded is not None and recorded != config_hash:
        return f"it was made with another config (hash {str(stats.get('config_hash'))[:12]})"
    records = stats.get("files") or {}
    for ext in SHARD_FILES:
        name = f"{stats['shard']}.{ext}"
        if name not in sizes:
            return f"{name} is missing"
        record = records.get(ext)
        if record is None:
            continue
        if sizes[name] != record.get("size"):
            return f"{name} is {sizes[name]} bytes but its stats say {record.get('size')}"
        if checksums:
            data = contents[name] if contents and name in contents else output.read_bytes(name)
            digest = hashlib.sha256(data).hexdigest()
            if digest != record.get("sha256"):
                return f"{name} does not match the sha256 its stats record"
    return None


def committed_shards(
    output: Output,
    config_hash: str | None = None,
    checksums: bool = True,
    rejected: dict[int, str] | None = None,
) -> dict[int, dict[str, Any]]:
    """Shard index -> stats for every committed shard: its ``.json`` exists and its tar and
    parquet match the sizes and checksums (and config hash) it records.

    Shards that fail are left out; their reasons go to ``rejected`` when given.
    """
    done = {}
    sizes = output.list_sizes("shard-")
    for name in sorted(sizes):
        m = SHARD_PATTERN.match(name)
        if not m or m.group(2) != "json":
            continue
        try:
            stats = output.read_json(name)
        except InputDataError as exc:
            problem: str | None = str(exc)
        else:
            problem = shard_problem(output, stats, sizes, config_hash, checksums)
        if problem is None:
            done[int(m.group(1))] = stats
        elif rejected is not None:
            rejected[int(m.group(1))] = problem
    return done


def interrupted_writes(names: list[str]) -> list[str]:
    """The temp files of interrupted shard writes among the file names of an output root."""
    return [n for n in names if TMP_PATTERN.match(n)]


def remove_interrupted_writes(output: Output) -> list[str]:
    """Delete temp files left by a writer killed mid-write (they never became shard files)."""
    stale = interrupted_writes(output.list_names())
    for name in stale:
        output.remove(name)
    return stale


def warm_up() -> None:
    """Pay the writer's one-time costs (pyarrow's first Parquet write imports pandas)
    when a worker starts rather than inside its first shard job."""
    ShardWriter(None, 0).parquet_bytes()  # type: ignore[arg-type]
    tar_bytes({})  # imports webdataset
