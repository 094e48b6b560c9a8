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

    @property
    def recorded(self) -> dict:
        """The files recorded in synthface-models.json: path -> {sha256, size, pinned}."""
        return (self.manifest or {}).get("files") or {}

    def rows(self) -> list[tuple[str, str, int | None, str, str, str]]:
        """One row per layout file: (state, name, size, pin, part, how to get it); state is
        ``ok``, ``missing`` (required) or ``absent`` (optional); pin is ``pinned``, ``unpinned``
        or ``-`` (not recorded)."""
        rows = []
        for s in self.files:
            state = "ok" if s.present else ("missing" if s.file.required else "absent")
            entry = self.recorded.get(s.found_as or s.file.path)
            pin = "-" if entry is None else ("pinned" if entry.get("pinned") else "unpinned")
            how = "" if s.present else f"{s.file.repo} : {s.file.repo_path}"
            rows.append((state, s.found_as or s.file.path, s.size, pin, s.file.part, how))
        return rows

    def missing_message(self) -> str:
        """What to do about missing required files."""
        return (
            f"{len(self.missing_required)} required file(s) missing: get them with "
            f"`synthface models download --to {self.root}` (or `synthface models init-tiny DIR` for a tiny test folder)"
        )

    def present_message(self) -> str:
        """All required files present, and how to get each absent optional part."""
        absent = sorted({s.file.extra for s in self.files if s.file.extra and not s.present})
        extra = "".join(
            f"; {_EXTRA_NAMES.get(e, e)} absent (optional: `synthface models download --to {self.root} --{e}`)"
            for e in absent
        )
        return f"all required model files present{extra}"


_EXTRA_NAMES = {"lcm-lora": "LCM-LoRA", "controlnet": "pose ControlNet", "exp-adapter": "expression adapter"}


def check_recorded(root: str | Path, recorded: dict, verify: bool) -> str:
    """Compare the folder's files with their recorded sizes (and, with ``verify``, sha256); the
    one-line outcome. A differing file raises ModelIntegrityError naming it."""
    from synthface.models.integrity import check_files

    if not recorded and not verify:
        return (
            f"no sha256 recorded in {root}/synthface-models.json: `generate` will refuse this folder until "
            f"you record them with `synthface models record {root}`"
        )
    checked = check_files(root, full=verify)
    pinned = sum(1 for e in checked.values() if e["pinned"])
    how = "re-hashed, sha256 matches" if verify else "size + mtime match (re-hash with --verify)"
    return (
        f"{len(checked)} recorded file(s) checked: {how}; {pinned} pinned to a known-good sha256, "
        f"{len(checked) - pinned} unpinned"
    )


def _find(root: Path, f: ModelFile) -> tuple[str | None, int | None]:
    name = f.present_name(root)
    return (name, (root / name).stat().st_size) if name else (None, None)


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


def prepare_tiny_target(folder: Path) -> None:
    """Create ``folder`` for a tiny random-weight model folder; refuse one that is not empty
    and not an earlier tiny folder (it may hold real weights)."""
    from synthface.errors import RunStateError

    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        manifest = read_manifest(folder) if folder.is_dir() else None
        if not manifest or manifest.get("origin") != "tiny-random":
            raise RunStateError(
                f"refusing to write a tiny model folder into {folder}: it is not empty and not an earlier tiny "
                "folder (it may hold real weights); choose an empty folder"
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunStateError(f"cannot create the model folder {folder}: {exc.strerror or exc}") from None


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
