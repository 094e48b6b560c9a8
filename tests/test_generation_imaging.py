"""Contact sheets and PNG writing (synthface.imaging)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from synthface.imaging import BACKGROUND, contact_sheet, save_png


def solid(value: int, size=(40, 30)) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


def test_grid_geometry_and_cell_placement():
    rows = [[solid(200), solid(100)], [solid(50), None]]
    sheet = contact_sheet(rows, tile=16, pad=2)
    assert sheet.shape == (2 + 2 * 18, 2 + 2 * 18, 3) and sheet.dtype == np.uint8
    assert (sheet[2:18, 2:18] == 200).all()  # row 0, col 0 (resized to the tile)
    assert (sheet[2:18, 20:36] == 100).all()  # row 0, col 1
    assert (sheet[20:36, 2:18] == 50).all()  # row 1, col 0
    assert (sheet[20:36, 20:36] == BACKGROUND).all()  # empty cell stays background


def test_row_labels_add_a_left_margin():
    sheet = contact_sheet([[solid(255)]], row_labels=["id 7"], tile=32, pad=4, label_width=60)
    assert sheet.shape[1] == 60 + 4 + 36
    label_area = sheet[4:36, :60]
    assert (label_area != BACKGROUND).any()  # the label is drawn


def test_ragged_rows_and_errors():
    sheet = contact_sheet([[solid(1)], [solid(2), solid(3), solid(4)]], tile=8, pad=0)
    assert sheet.shape[:2] == (16, 24)
    with pytest.raises(ValueError):
        contact_sheet([])


def test_save_png_round_trip_leaves_no_temp_files(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    path = save_png(image, tmp_path / "sub" / "x.png")
    assert np.array_equal(np.asarray(Image.open(path)), image)
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]
