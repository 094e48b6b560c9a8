"""Inspect a model folder: which files are present, which are missing, how to get them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from synthface.errors import MissingModelError
from synthface.models.layout import MANIFEST, MODEL_FILES, ModelFile


@dataclass(frozen=True)
class FileStatus:
    file: ModelFile
    present: bool
    found_as: str | None  # the name actually found (may be an alternative)
    size: int | None


@dataclass
class FolderReport:
    root: Path
    exists: bool
    files: list[FileStatus] = field(default_factory=list)
    manifest: dict | None = None

    @property
    def missing_required(self) -> list[FileStatus]:
        return [s for s in self.files if s.file.required and not s.present]

    @property
    def ok(self) -> bool:
        """All required files are present (optional ones may be missing)."""
        return self.exists and not self.missing_required

    @property
    def origin(self) -> str:
        return (self.manifest or {}).get("origin", "unknown")


def _find(root: Path, f: ModelFile) -> tuple[str | None, int | None]:
    for name in (f.path, *f.alternatives):
        p = root / name
        if p.is_file() and p.stat().st_size > 0:  # a zero-byte file is an interrupted download, not a model
            return name, p.stat().st_size
    return None, None


def read_manifest(root: str | Path) -> dict | None:
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def check(root: str | Path) -> FolderReport:
    """Report on every file of the layout under ``root`` (never raises)."""
    root = Path(root)
    report = FolderReport(root=root, exists=root.is_dir())
    for f in MODEL_FILES:
        found, size = _find(root, f) if report.exists else (None, None)
        report.files.append(FileStatus(f, found is not None, found, size))
    report.manifest = read_manifest(root) if report.exists else None
    return report


def missing_folder_message(root: Path) -> str:
    return (
        f"model folder not found: {root}. Get the weights with `synthface models download --to {root}` "
        f"(or `synthface models init-tiny {root}` for a tiny random-weight test folder)"
    )


def require(root: str | Path, paths: list[str]) -> Path:
    """Raise :class:`MissingModelError` naming the first missing file among ``paths``.

    ``paths`` are layout paths (``"arc2face/config.json"``); alternatives count.
    Returns the folder as a Path.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingModelError(missing_folder_message(root))
    wanted = [f for f in MODEL_FILES if f.path in paths]
    for f in wanted:
        found, _ = _find(root, f)
        if found is None:
            raise MissingModelError(
                f"model file missing: {root / f.path} ({f.part}). Get it with {f.how_to_get()}; "
                f"`synthface models check {root}` lists everything that is missing"
            )
    return root
