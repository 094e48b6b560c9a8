"""The output location: a local folder or any fsspec URL (``s3://bucket/run``).

All shard and manifest IO goes through :class:`Output`, so the same code
writes to a disk or an object store. Filesystem options come from fsspec's own
configuration (for example ``FSSPEC_S3='{"endpoint_url": ...}'``), which the
pipeline forwards to its workers.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
from typing import Any

import fsspec
import fsspec.config

from synthface.errors import InputDataError, OutputError
from synthface.files import atomic_path


# errors of writing that a retry on another worker cannot fix
_FATAL_ERRNOS = {errno.ENOSPC: "no space left on the output", errno.EDQUOT: "disk quota exceeded on the output",
                 errno.EROFS: "the output is read-only", errno.EACCES: "no permission to write the output",
                 errno.EPERM: "no permission to write the output"}
# botocore's errors are not OSErrors; they are matched by name so botocore stays optional
_CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError")


def write_error(url: str, exc: BaseException) -> OutputError:
    """One OutputError for any failure to write ``url``."""
    if type(exc).__name__ in _CREDENTIAL_ERRORS:
        return OutputError(
            f"cannot write {url}: no credentials for the object store ({type(exc).__name__}); give every "
            f"worker credentials, e.g. FSSPEC_S3 or AWS_* variables in the environment of `synthface "
            f"generate` (see docs/cluster.md)",
            fatal_reason="no credentials for the output's object store",
        )
    if isinstance(exc, PermissionError) and not getattr(exc, "errno", None):
        return OutputError(f"cannot write {url}: access denied ({exc})", fatal_reason="access denied on the output")
    code = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return OutputError(f"cannot write {url}: {text}", fatal_reason=_FATAL_ERRNOS.get(code))


def fsspec_env() -> dict[str, str]:
    """The ``FSSPEC_*`` environment variables (fsspec settings) to pass to workers."""
    return {k: v for k, v in os.environ.items() if k.startswith("FSSPEC_")}


def _storage_options(protocol: str) -> dict[str, Any]:
    # fsspec reads FSSPEC_* only when it is first imported; read them again so
    # settings made later in this process (tests, notebooks) apply too.
    conf: dict[str, dict[str, Any]] = {}
    fsspec.config.set_conf_env(conf)
    return dict(conf.get(protocol, {}))


def _no_credentials(url: str, exc: BaseException) -> OutputError | None:
    if type(exc).__name__ in _CREDENTIAL_ERRORS:
        return OutputError(
            f"cannot open {url}: no credentials for the object store ({type(exc).__name__}); set them for "
            f"this process, e.g. AWS_* variables or key/secret in FSSPEC_S3 (see docs/cluster.md)",
            fatal_reason="no credentials for the output's object store",
        )
    return None


class Output:
    """A folder (local or remote) that holds one dataset.

    Every access turns an object store's missing credentials into one OutputError.
    """

    def __init__(self, url: str):
        self.url = str(url).rstrip("/") or "/"
        if "::" in self.url:
            # fsspec would read it as a chain of filesystems ("a::b" = b seen through a) and
            # write somewhere else than the folder named
            raise OutputError(
                f"output {self.url}: '::' chains fsspec filesystems and is not supported; use a plain "
                f"folder or URL (s3://bucket/run)"
            )
        protocol = fsspec.core.split_protocol(self.url)[0] or "file"
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **_storage_options(protocol))
        except (ValueError, ImportError) as exc:  # unknown protocol, or its package is not installed
            raise OutputError(f"cannot open output {self.url}: {exc}") from None
        self.is_local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        if self.is_local:
            # absolute, so that workers with another working directory write to the same place
            self.url = self.root

    def __repr__(self) -> str:
        return f"Output({self.url!r})"

    def path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def url_of(self, name: str) -> str:
        """A URL other tools (webdataset, wids, datasets) can open."""
        if self.is_local:
            return os.path.join(self.root, name)
        return f"{self.url}/{name}"

    def makedirs(self) -> None:
        if self.is_local and os.path.exists(self.root) and not os.path.isdir(self.root):
            raise OutputError(f"output {self.url} exists and is not a folder")
        try:
            self._guard("", self.fs.makedirs, self.root, True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {self.url}: {exc.strerror or exc}") from None

    def _guard(self, name: str, call, *args):
        try:
            return call(*args)
        except Exception as exc:
            converted = _no_credentials(self.url_of(name), exc)
            if converted is None:
                raise
            raise converted from None

    def exists(self, name: str) -> bool:
        return self._guard(name, self.fs.exists, self.path(name))

    def read_bytes(self, name: str) -> bytes:
        try:
            return self._guard(name, self.fs.cat_file, self.path(name))
        except FileNotFoundError:
            raise InputDataError(f"{self.url_of(name)}: not found") from None
        except OSError as exc:  # a folder, no permission
            raise InputDataError(f"{self.url_of(name)}: cannot read ({exc.strerror or exc})") from None

    def read_json(self, name: str) -> Any:
        data = self.read_bytes(name)
        try:
            return json.loads(data)
        except UnicodeDecodeError:
            raise InputDataError(f"{self.url_of(name)}: not valid JSON (binary data)") from None
        except json.JSONDecodeError as exc:
            raise InputDataError(f"{self.url_of(name)}: not valid JSON ({exc})") from None

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a file so that readers see either nothing, the old or the whole new file.

        Locally: a temp file in the same folder, fsync, then rename. On object
        stores a single PUT is already all-or-nothing.
        """
        target = self.path(name)
        try:
            self._write(target, data)
        except OSError as exc:  # disk full, no permission, a file where a folder should be
            raise write_error(self.url_of(name), exc) from None
        except Exception as exc:  # an object store's own errors (no credentials)
            if type(exc).__name__ in _CREDENTIAL_ERRORS:
                raise write_error(self.url_of(name), exc) from None
            raise

    def _write(self, target: str, data: bytes) -> None:
        if not self.is_local:
            self.fs.pipe_file(target, data)
            return
        with atomic_path(target, fsync=True) as tmp:
            tmp.write_bytes(data)

    def write_json(self, name: str, obj: Any) -> None:
        self.write_bytes(name, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))

    def list_names(self, prefix: str = "", suffix: str = "") -> list[str]:
        """File names directly under the root, filtered by prefix/suffix, sorted."""
        if not self._guard("", self.fs.exists, self.root):
            return []
        self.fs.invalidate_cache(self.root)
        names = [posixpath.basename(p.rstrip("/")) for p in self._guard("", self.fs.ls, self.root, False)]
        return sorted(n for n in names if n.startswith(prefix) and n.endswith(suffix))

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        """File name -> size in bytes for the files directly under the root (one listing)."""
        if not self._guard("", self.fs.exists, self.root):
            return {}
        self.fs.invalidate_cache(self.root)
        out = {}
        for entry in self._guard("", self.fs.ls, self.root, True):
            name = posixpath.basename(entry["name"].rstrip("/"))
            if entry.get("type") == "file" and name.startswith(prefix):
                out[name] = int(entry.get("size") or 0)
        return out

    def remove(self, name: str) -> None:
        path = self.path(name)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
