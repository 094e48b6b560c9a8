"""bench/runner.py: what every benchmark shares (device/dtype, load warning, JSON result)."""

from __future__ import annotations

import json

import pytest

from bench.runner import cpu_seconds, load_warning, resolve_device, resolve_dtype, warn_if_loaded, write_result
from synthface.errors import ConfigError


def test_load_warning_only_above_the_core_count():
    assert load_warning(1.5, 2) is None
    assert load_warning(2.0, 2) is None
    line = load_warning(7.8, 2)
    assert line.startswith("warning: load average 7.8 on 2 CPUs") and "unreliable" in line


def test_warn_if_loaded_prints_the_warning_line(monkeypatch):
    lines = []
    monkeypatch.setattr("bench.runner.load_average", lambda: 1e6)
    warn_if_loaded(lines.append)
    assert len(lines) == 1 and lines[0].startswith("warning: load average")
    monkeypatch.setattr("bench.runner.load_average", lambda: 0.0)
    warn_if_loaded(lines.append)
    assert len(lines) == 1


def test_write_result_is_whole_json_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "runs" / "bench" / "r.json"
    write_result(path, {"rows": [1, 2], "when": tmp_path})  # default=str: paths and the like as text
    assert json.loads(path.read_text()) == {"rows": [1, 2], "when": str(tmp_path)}
    write_result(path, {"rows": []})
    assert json.loads(path.read_text()) == {"rows": []}
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]
    write_result(None, {"ignored": True})  # no --json: nothing written


def test_device_and_dtype_follow_the_generators_rule():
    import torch

    cpu = resolve_device("cpu")
    assert cpu.type == "cpu"
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="--dtype"):
        resolve_dtype("float8", cpu)
    with pytest.raises(ConfigError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ConfigError, match="--device"):
            resolve_device("cuda")


def test_cpu_seconds_grow_with_work():
    start = cpu_seconds()
    sum(i * i for i in range(300_000))
    assert cpu_seconds() > start
