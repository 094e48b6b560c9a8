"""synthface.files (atomic writes) and synthface.config.parse_list (command-line lists)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from synthface.config import parse_list
from synthface.errors import ConfigError
from synthface.files import atomic_path, write_bytes_atomic, write_json_atomic, write_text_atomic


def test_atomic_writes_replace_the_file_and_leave_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.bin"
    write_bytes_atomic(target, b"one")
    write_bytes_atomic(target, b"two", fsync=True)
    assert target.read_bytes() == b"two"
    write_text_atomic(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    write_json_atomic(tmp_path / "j.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": [1, 2], "b": 1}
    assert (tmp_path / "j.json").read_text().endswith("\n")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.bin", "j.json", "sub", "t.txt"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_atomic_writes_get_the_permissions_of_a_plain_write(tmp_path):
    """Not mkstemp's 0600: a dataset or bank written atomically stays readable to the users a plain write allows."""
    old = os.umask(0o022)
    try:
        (tmp_path / "plain.bin").write_bytes(b"x")
        write_bytes_atomic(tmp_path / "atomic.bin", b"x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "atomic.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == 0o644


def test_parse_list():
    assert parse_list(None, "--sizes") is None
    assert parse_list("  ", "--sizes") is None
    assert parse_list("1000, 10000,,", "--sizes", int, minimum=1) == [1000, 10000]
    assert parse_list("a,b", "--names") == ["a", "b"]
    assert parse_list("0.5,1", "--tau", float) == [0.5, 1.0]
    with pytest.raises(ConfigError, match="--sizes: expected a comma-separated list of int"):
        parse_list("1,x", "--sizes", int)
    with pytest.raises(ConfigError, match="--workers: every value must be >= 1"):
        parse_list("2,0", "--workers", int, minimum=1)
