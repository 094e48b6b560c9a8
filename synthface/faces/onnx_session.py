"""Opening ONNX model files with onnxruntime: path resolution, device choice
and one clear error for a missing or unusable file.

The insightface pip package is deliberately not used (it pins the CPU build of
onnxruntime); insightface-format models are plain ONNX files.
"""

from __future__ import annotations

from pathlib import Path

from synthface.errors import ConfigError, MissingModelError, UnusableModelError

HOW_TO_GET = (
    "download the face models with `synthface models download` (or write tiny random test models with "
    "`synthface models init-tiny`), or point faces.detector / faces.recognizer at the file"
)


def resolve_model_path(models_dir: str | Path | None, name: str, key: str) -> Path:
    """``name`` if absolute (or ``models_dir`` is None), else ``models_dir / name``; must exist."""
    path = Path(name).expanduser()
    if not path.is_absolute() and models_dir is not None:
        path = Path(models_dir) / path
    if not path.is_file():
        raise MissingModelError(f"{key}: model file not found: {path}; {HOW_TO_GET}")
    return path


def choose_providers(device: str) -> list[str]:
    """onnxruntime execution providers for ``device`` ('auto', 'cpu', 'cuda')."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise ConfigError(
            f"faces.device: 'cuda' requested but onnxruntime offers only {available} "
            "(install onnxruntime-gpu, e.g. `pip install synthface[gpu]`, and not the CPU onnxruntime)"
        )
    if device in ("cuda", "auto") and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(path: Path, device: str = "auto", threads: int = 0, what: str = "model", hint: str = HOW_TO_GET):
    """An ``onnxruntime.InferenceSession`` for ``path``; a file onnxruntime cannot load is an
    :class:`UnusableModelError` naming it (a truncated download looks exactly like this) and
    ending with ``hint`` (how to get a good copy)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime warns about unused initializers in insightface exports
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=choose_providers(device))
    except ConfigError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnusableModelError(
            f"{what} {path} is not a usable ONNX model ({first_line[:200]}); the file may be truncated or "
            f"corrupt: {hint}"
        ) from None


def describe_dim(dim) -> int | None:
    """An ONNX dimension as an int, or None when it is symbolic/unknown."""
    return dim if isinstance(dim, int) and dim > 0 else None
