"""Which bytes a model folder holds, and whether they are still the ones recorded.

``synthface-models.json`` keeps, under ``files``, one entry per model file:
its sha256, size and mtime when it was written (download, init-tiny, or
`synthface models record`), where it came from, and whether the sha256 was
checked against a known-good value shipped here (``pinned``).

- :func:`check_files` compares a folder with those entries. The cheap check
  (the default) compares sizes, and hashes only a file whose mtime changed
  since it was recorded or last hashed (a copied folder gets new mtimes;
  its hashes are then computed once and cached by size + mtime). The full
  check (``full=True``, `--verify`) re-hashes every file.
- :data:`KNOWN_SHA256` holds the known-good values we can state a source for
  (docs/generation.md, "Where each file comes from").
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthface.errors import MissingModelError, ModelIntegrityError
from synthface.files import sha256_file, write_text_atomic
from synthface.models.layout import DETECTOR_ONNX, MANIFEST, MODEL_FILES

# Hashes of files whose mtime no longer matches the manifest (e.g. after a
# copy), keyed by size + mtime, so a folder is hashed once, not every run.
HASH_CACHE = ".synthface-hash-cache.json"


@dataclass(frozen=True)
class KnownFile:
    sha256: str
    size: int
    source: str  # where this value can be checked


# Known-good values, by layout path. Only files whose provenance we can state;
# everything else is recorded at download and reported as unpinned.
KNOWN_SHA256: dict[str, KnownFile] = {
    # insightface's SCRFD-10G with keypoints: `det_10g.onnx` in the official
    # buffalo_l v0.7 release zip and `scrfd_10g_bnkps.onnx` in antelopev2 are
    # the same file. insightface publishes no checksums; this value is the one
    # several independent projects list for both names (docs/generation.md).
    DETECTOR_ONNX: KnownFile(
        "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
        16923827,
        "insightface buffalo_l v0.7 det_10g.onnx = antelopev2 scrfd_10g_bnkps.onnx (docs/generation.md)",
    ),
}


def file_record(root: Path, rel: str, source: str) -> dict[str, Any]:
    """The manifest entry of ``root/rel``: sha256, size, mtime, source, pinned."""
    path = root / rel
    st = path.stat()
    digest = sha256_file(path)
    known = KNOWN_SHA256.get(rel)
    return {
        "sha256": digest,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "source": source,
        "pinned": bool(known and known.sha256 == digest),
    }


def present_layout_files(root: Path) -> list[str]:
    """Layout files found under ``root`` (the name actually present, alternatives included)."""
    return [name for f in MODEL_FILES if (name := f.present_name(root)) is not None]


def read_manifest_strict(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise ModelIntegrityError(
            f"{path} is missing: the folder's files cannot be checked. Record them with "
            f"`synthface models record {root}` (or fill the folder with `synthface models download --to {root}`)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelIntegrityError(f"{path} is unreadable ({exc}); record the files again with `synthface models record {root}`") from None
    if not isinstance(data, dict):
        raise ModelIntegrityError(f"{path} is not a JSON object; record the files again with `synthface models record {root}`")
    return data


def write_manifest_files(root: Path, files: dict[str, dict[str, Any]]) -> None:
    """Replace the ``files`` section of ``root``'s manifest (atomically; other keys kept)."""
    path = root / MANIFEST
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"origin": "recorded", "parts": {}}
    data["files"] = dict(sorted(files.items()))
    write_text_atomic(path, json.dumps(data, indent=2))


def record_folder(root: str | Path, source: str = "recorded from the folder") -> dict[str, dict[str, Any]]:
    """Hash every layout file present under ``root`` into its manifest; returns the entries.

    For init-tiny, a folder assembled by hand, or one downloaded before hashes
    were recorded. Nothing is refused here: an entry whose sha256 differs from
    a known-good value is recorded with ``pinned: false`` (see
    :func:`known_mismatch`).
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingModelError(f"model folder not found: {root}")
    files = {rel: file_record(root, rel, source) for rel in present_layout_files(root)}
    write_manifest_files(root, files)
    return files


def known_mismatch(root: Path, rel: str, sha256: str, size: int) -> str | None:
    """A message if ``rel`` has a known-good sha256 and this one differs, else None."""
    known = KNOWN_SHA256.get(rel)
    if known is None or known.sha256 == sha256:
        return None
    return (
        f"{root / rel} is not the known-good file: sha256 {sha256} ({size} bytes), expected {known.sha256} "
        f"({known.size} bytes; {known.source})"
    )


def _load_cache(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / HASH_CACHE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def check_files(root: str | Path, full: bool = False) -> dict[str, dict[str, Any]]:
    """Compare ``root`` with its manifest; returns ``{path: {sha256, size, pinned}}`` of the checked files.

    Raises :class:`ModelIntegrityError` naming the first file that is
    missing, has another size or other contents than recorded, or is present
    in the layout without a manifest entry.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingModelError(f"model folder not found: {root}")
    manifest = read_manifest_strict(root)
    recorded = manifest.get("files")
    if not isinstance(recorded, dict) or not recorded:
        raise ModelIntegrityError(
            f"{root / MANIFEST} records no file hashes (written before synthface recorded them): record them with "
            f"`synthface models record {root}`"
        )
    for rel in present_layout_files(root):
        if rel not in recorded:
            raise ModelIntegrityError(
                f"{root / rel} has no entry in {root / MANIFEST}: it was added or replaced after the folder was "
                f"recorded. Check where it came from, then record it with `synthface models record {root}`"
            )
    restore = (
        f"write the tiny folder again (`synthface models init-tiny {root}`)"
        if manifest.get("origin") == "tiny-random"
        else f"download it again (`synthface models download --to {root}`)"
    )
    cache = {} if full else _load_cache(root)
    cache_changed = False
    checked: dict[str, dict[str, Any]] = {}
    for rel, entry in sorted(recorded.items()):
        path = root / rel
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ModelIntegrityError(
                f"{path} is recorded in {root / MANIFEST} but missing; {restore}"
            ) from None
        want_size, want_sha = int(entry.get("size", -1)), str(entry.get("sha256", ""))
        if st.st_size != want_size:
            raise ModelIntegrityError(
                f"{path} is {st.st_size} bytes but {want_size} were recorded (truncated or replaced); {restore}"
            )
        if full:
            digest = sha256_file(path)
        elif st.st_mtime_ns == entry.get("mtime_ns"):
            digest = want_sha  # unchanged since recorded: trust size + mtime
        else:
            hit = cache.get(rel)
            if hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
                digest = hit["sha256"]
            else:
                digest = sha256_file(path)
                cache[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
                cache_changed = True
        if digest != want_sha:
            raise ModelIntegrityError(
                f"{path} differs from the file recorded in {root / MANIFEST}: sha256 {digest}, recorded {want_sha}; {restore}"
            )
        checked[rel] = {"sha256": digest, "size": st.st_size, "pinned": bool(entry.get("pinned"))}
    if cache_changed:
        try:
            write_text_atomic(root / HASH_CACHE, json.dumps(cache, indent=2))
        except OSError:
            pass  # a read-only folder: hash again next time
    return checked


def describe_files(root: str | Path, names: Iterable[str]) -> dict[str, str]:
    """sha256 of each named file under ``root``, for a folder without a manifest.

    Nothing is written there (it may be a shared, read-only folder)."""
    root = Path(root)
    return {rel: sha256_file(root / rel) for rel in names}


def verify_model_folder(models_dir: str | Path, full: bool = False) -> dict[str, dict[str, Any]] | None:
    """What a run checks before it uses ``models_dir``: :func:`check_files` when the folder has a manifest.

    None when the folder is not on this machine (the workers load it and say
    so) or has no synthface-models.json (a hand-assembled folder: the run goes
    on, and its dataset.json records the hashes as unverified).
    """
    root = Path(models_dir)
    if not root.is_dir() or not (root / MANIFEST).is_file():
        return None
    return check_files(root, full=full)


def describe_models(models_dir: str, checked: dict[str, dict[str, Any]] | None = None, how: str = "size+mtime") -> dict[str, Any]:
    """What the model folder holds: its synthface-models.json and each model file's sha256.

    ``checked`` is what the run verified at start (synthface.models.integrity,
    hashed once and cached by size + mtime, so nothing is re-hashed here);
    without it (a folder with no manifest) the layout files are hashed now
    and recorded as unverified.
    """
    root = Path(models_dir)
    info: dict[str, Any] = {"dir": str(models_dir), "origin": "unknown", "files": {}, "verified": False}
    if not root.is_dir():
        info["origin"] = "missing"
        return info
    meta = root / MANIFEST
    if meta.is_file():
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            info["info"] = {k: v for k, v in data.items() if k != "files"}
            info["origin"] = data.get("origin", "unknown")
        except json.JSONDecodeError:
            info["origin"] = "unreadable"
    if checked is not None:
        info["files"] = {rel: e["sha256"] for rel, e in sorted(checked.items())}
        info["pinned"] = sorted(rel for rel, e in checked.items() if e.get("pinned"))
        info["verified"] = how
    else:
        info["files"] = describe_files(root, present_layout_files(root))
    return info
