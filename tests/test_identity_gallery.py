"""Gallery input: .npy and Parquet, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthface.errors import InputDataError
from synthface.identity.gallery import load_gallery


def _good(n=10, dim=512):
    return np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32) * 7.0


def test_npy_is_loaded_and_normalised(tmp_path):
    path = tmp_path / "g.npy"
    np.save(path, _good())
    g = load_gallery(path)
    assert g.shape == (10, 512) and g.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-6)


def test_parquet_list_column(tmp_path):
    path = tmp_path / "g.parquet"
    data = _good(4)
    pq.write_table(pa.table({"embedding": pa.array(list(data)), "name": ["a", "b", "c", "d"]}), path)
    g = load_gallery(path)
    np.testing.assert_allclose(g, data / np.linalg.norm(data, axis=1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize(
    "array, message",
    [
        (_good(dim=128), "dimension 128, expected 512"),
        (_good()[0], "2-D array"),
        (np.zeros((3, 512), dtype=np.float32), "zero vectors"),
        (np.where(np.arange(512) == 5, np.nan, _good(3)), "NaN or inf"),
        (np.where(np.arange(512) == 5, np.inf, _good(3)), "NaN or inf"),
        (np.zeros((0, 512), dtype=np.float32), "no embeddings"),
    ],
)
def test_bad_npy_arrays(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(InputDataError, match=message):
        load_gallery(path)


def test_bad_files(tmp_path):
    with pytest.raises(InputDataError, match="not found"):
        load_gallery(tmp_path / "missing.npy")
    (tmp_path / "g.csv").write_text("1,2\n")
    with pytest.raises(InputDataError, match=".npy or .parquet"):
        load_gallery(tmp_path / "g.csv")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InputDataError, match="not a readable .npy"):
        load_gallery(tmp_path / "junk.npy")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputDataError, match="not a readable Parquet"):
        load_gallery(tmp_path / "junk.parquet")
    pq.write_table(pa.table({"vec": pa.array(list(_good(2)))}), tmp_path / "nocol.parquet")
    with pytest.raises(InputDataError, match="no 'embedding' column"):
        load_gallery(tmp_path / "nocol.parquet")
    pq.write_table(pa.table({"embedding": pa.array(list(_good(2, 100)))}), tmp_path / "dim.parquet")
    with pytest.raises(InputDataError, match="dimension 100"):
        load_gallery(tmp_path / "dim.parquet")
    pq.write_table(pa.table({"embedding": pa.array([[1.0] * 512, [1.0] * 3])}), tmp_path / "ragged.parquet")
    with pytest.raises(InputDataError, match="different lengths"):
        load_gallery(tmp_path / "ragged.parquet")
    pq.write_table(pa.table({"embedding": pa.array([1.0, 2.0])}), tmp_path / "scalar.parquet")
    with pytest.raises(InputDataError, match="lists of floats"):
        load_gallery(tmp_path / "scalar.parquet")
