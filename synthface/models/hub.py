"""Fill a model folder from the Hugging Face hub (huggingface_hub).

Files land directly under their layout paths (no symlinks into a cache), so
the folder can be copied to machines without internet. Before any download,
a short TCP check tells an offline machine so within seconds instead of
letting each request retry and time out (skipped behind an HTTP(S) proxy).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from synthface.errors import MissingModelError, ModelIntegrityError
from synthface.models.integrity import file_record, known_mismatch, present_layout_files
from synthface.models.layout import MODEL_FILES, ModelFile
from synthface.models.tiny import write_models_manifest

CONNECT_TIMEOUT_S = 5.0
# With one of these set the hub is reached through a proxy, and a direct TCP
# connection to it would fail on a machine that is not offline at all.
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def offline_message(root: Path, why: str) -> str:
    return (
        f"cannot download models into {root}: the Hugging Face hub is not reachable ({why}). "
        "This machine looks offline: run `synthface models download --to DIR` where there is internet "
        "and copy DIR here, or set HF_ENDPOINT to a reachable mirror"
    )


def check_connectivity(root: Path, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise MissingModelError quickly when the hub cannot be reached."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise MissingModelError(offline_message(root, "HF_HUB_OFFLINE is set"))
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return  # behind a proxy: leave it to the hub client (its own timeouts, errors mapped in download)
    url = urlparse(hub_endpoint())
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise MissingModelError(offline_message(root, f"{host}:{port}: {exc.strerror or exc}")) from None


def files_to_fetch(include_lcm_lora: bool, include_controlnet: bool = False, include_exp_adapter: bool = False) -> list[ModelFile]:
    extras = {"lcm-lora": include_lcm_lora, "controlnet": include_controlnet, "exp-adapter": include_exp_adapter}
    return [f for f in MODEL_FILES if f.required or extras.get(f.extra or "", False)]


def download(
    root: str | Path,
    include_lcm_lora: bool = False,
    revision: str | None = None,
    detector_repo: str | None = None,
    progress: Callable[[ModelFile], None] | None = None,
    include_controlnet: bool = False,
    include_exp_adapter: bool = False,
    checked: Callable[[ModelFile, dict], None] | None = None,
) -> Path:
    """Download every model file into ``root`` and write ``synthface-models.json``.

    ``revision`` pins the Arc2Face repo (branch, tag or commit); the other repos
    use their main branch. Files already present are kept (resumable). Each
    file's sha256 and size are recorded; a file that differs from the hub's own
    LFS sha256 or from a known-good value (integrity.KNOWN_SHA256) is deleted
    and the download stops with a message naming it. ``checked(file, entry)``
    is called per file with its manifest entry (``pinned`` says whether a
    known-good value confirmed it).
    """
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from synthface.models.layout import ANTELOPEV2_REPO, ARC2FACE_REPO

    root = Path(root)
    check_connectivity(root)
    root.mkdir(parents=True, exist_ok=True)
    api = HfApi()
    revisions: dict[str, str | None] = {}
    hub_sha256: dict[tuple[str, str], str] = {}  # (repo, path) -> sha256 the hub lists for an LFS file
    records: dict[str, dict] = {}

    def repo_of(f: ModelFile) -> str:
        return detector_repo if (detector_repo and f.repo == ANTELOPEV2_REPO) else f.repo

    for f in files_to_fetch(include_lcm_lora, include_controlnet, include_exp_adapter):
        repo = repo_of(f)
        rev = revision if repo == ARC2FACE_REPO else None
        if progress:
            progress(f)
        # The layout path ends with the repo path; the prefix is where it goes.
        local_dir = root / f.path[: len(f.path) - len(f.repo_path)]
        try:
            if repo not in revisions:
                info = api.model_info(repo, revision=rev, timeout=30, files_metadata=True)
                revisions[repo] = info.sha
                for sib in info.siblings or ():
                    if getattr(sib, "lfs", None) is not None:
                        hub_sha256[(repo, sib.rfilename)] = sib.lfs.sha256
            hf_hub_download(repo, f.repo_path, revision=revisions[repo] or rev, local_dir=local_dir, etag_timeout=10)
        except GatedRepoError:
            raise MissingModelError(
                f"{repo} is gated: accept its terms on huggingface.co and log in (`hf auth login`), then retry"
            ) from None
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise MissingModelError(f"{repo}: repository or revision not found on the hub ({type(exc).__name__})") from None
        except LocalEntryNotFoundError as exc:
            raise MissingModelError(offline_message(root, f"{repo}/{f.repo_path}: {exc}")) from None
        except HfHubHTTPError as exc:
            raise MissingModelError(f"downloading {repo}/{f.repo_path} failed: {exc}") from None
        except OSError as exc:  # connection resets, timeouts, disk full
            raise MissingModelError(f"downloading {repo}/{f.repo_path} into {local_dir} failed: {exc}") from None

        entry = file_record(root, f.path, f"{repo}@{revisions[repo] or rev or 'main'}:{f.repo_path}")
        _refuse_if_differs(root, f, entry, hub_sha256.get((repo, f.repo_path)))
        records[f.path] = entry
        if checked:
            checked(f, entry)

    # files already in the folder that this call did not fetch (e.g. an optional
    # part from an earlier download) keep their entries, or get one now
    from synthface.models.check import read_manifest

    earlier = (read_manifest(root) or {}).get("files") or {}
    for rel in present_layout_files(root):
        if rel not in records:
            records[rel] = earlier.get(rel) or file_record(root, rel, "already in the folder (not fetched by this download)")
    parts = {repo: {"repo": repo, "revision": sha} for repo, sha in revisions.items()}
    write_models_manifest(root, "download", parts, {"files": dict(sorted(records.items()))})
    return root


def _refuse_if_differs(root: Path, f: ModelFile, entry: dict, hub_sha: str | None) -> None:
    """Delete a downloaded file that is not what the hub or a known-good hash says, and stop."""
    problem = None
    if hub_sha and hub_sha != entry["sha256"]:
        problem = f"{root / f.path}: sha256 {entry['sha256']} differs from the hub's LFS record {hub_sha} (corrupted transfer?)"
    else:
        problem = known_mismatch(root, f.path, entry["sha256"], entry["size"])
    if problem:
        (root / f.path).unlink(missing_ok=True)
        raise ModelIntegrityError(
            f"{problem}; deleted it. Retry the download; if the same file comes back, the source serves a "
            f"different file (for the detector, try another antelopev2 mirror with --detector-repo)"
        )
