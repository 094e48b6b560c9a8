"""Reading a gallery of reference embeddings (.npy or Parquet).

A gallery is a set of real face embeddings in the identity space: the packed
sampler's regulariser pulls towards it, the gallery sampler draws around it and
the novelty screen keeps new identities away from it. Bad files fail here, with
one message that names the file and the problem, before any work starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthface.errors import InputDataError
from synthface.identity.config import EMBEDDING_DIM


def load_gallery(path: str | Path, dim: int = EMBEDDING_DIM, column: str = "embedding") -> np.ndarray:
    """Read embeddings from ``path`` and return them unit-normalised, float32[G, dim].

    ``.npy``: a 2-D array (G, dim). ``.parquet``: a list/fixed-size-list column
    named ``column`` (an identity bank file works as is).
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"gallery file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _read_npy(path)
    elif suffix in (".parquet", ".pq"):
        array = _read_parquet(path, column)
    else:
        raise InputDataError(f"gallery {path}: expected a .npy or .parquet file, got '{path.suffix}'")
    return validate_embeddings(array, dim, source=f"gallery {path}")


def validate_embeddings(array: np.ndarray, dim: int = EMBEDDING_DIM, source: str = "embeddings") -> np.ndarray:
    """Check shape and values; return the rows unit-normalised as float32."""
    if array.ndim != 2:
        raise InputDataError(f"{source}: expected a 2-D array (N, {dim}), got shape {array.shape}")
    if array.shape[1] != dim:
        raise InputDataError(f"{source}: embeddings have dimension {array.shape[1]}, expected {dim}")
    if array.shape[0] == 0:
        raise InputDataError(f"{source}: no embeddings")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputDataError(f"{source}: embeddings must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise InputDataError(f"{source}: {int(bad.sum())} rows hold NaN or inf (first: row {int(np.argmax(bad))})")
    norms = np.linalg.norm(array, axis=1)
    zero = norms < 1e-12
    if zero.any():
        raise InputDataError(f"{source}: {int(zero.sum())} rows are zero vectors (first: row {int(np.argmax(zero))})")
    return (array / norms[:, None]).astype(np.float32)


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputDataError(f"gallery {path}: not a readable .npy array ({exc})") from None


def _read_parquet(path: Path, column: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputDataError(f"gallery {path}: not a readable Parquet file ({exc})") from None
    if column not in table.column_names:
        raise InputDataError(f"gallery {path}: no '{column}' column (columns: {', '.join(table.column_names)})")
    col = table.column(column)
    if not (pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type)):
        raise InputDataError(f"gallery {path}: column '{column}' must hold lists of floats, got {col.type}")
    if col.null_count:
        raise InputDataError(f"gallery {path}: column '{column}' has {col.null_count} null rows")
    col = col.combine_chunks()
    if len(col) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    lengths = pc.list_value_length(col).to_numpy()
    if (lengths != lengths[0]).any():
        raise InputDataError(f"gallery {path}: rows of '{column}' have different lengths")
    if not pa.types.is_floating(col.type.value_type) and not pa.types.is_integer(col.type.value_type):
        raise InputDataError(f"gallery {path}: column '{column}' must hold numbers, got {col.type.value_type}")
    # Nulls inside the lists become NaN here and are reported by the NaN check.
    values = col.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    return values.reshape(len(col), int(lengths[0]))
