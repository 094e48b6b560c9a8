from __future__ import annotations

import pytest

from synthface.config import apply_overrides, config_hash, load_config, parse_override
from synthface.errors import ConfigError
from pipelines.config import FactoryConfig, load_factory_config


def test_override_values_are_parsed_as_yaml():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=hello") == (["a"], "hello")


def test_override_creates_nested_sections_and_keeps_input():
    data = {"x": {"y": 1}}
    out = apply_overrides(data, ["x.z=2", "w.v=3"])
    assert out == {"x": {"y": 1, "z": 2}, "w": {"v": 3}}
    assert data == {"x": {"y": 1}}


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1"])
def test_malformed_override_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        parse_override(bad)


def test_unknown_key_wrong_type_and_range_name_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\nbogus: 1\n")
    with pytest.raises(ConfigError, match="'bogus': unknown key"):
        load_factory_config(path)
    with pytest.raises(ConfigError, match="'seed'"):
        load_factory_config(None, ["seed=abc"])
    with pytest.raises(ConfigError, match="'seed'.*greater than or equal"):
        load_factory_config(None, ["seed=-4"])


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_factory_config(tmp_path / "missing.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_factory_config(path)


def test_config_hash_is_stable_and_sensitive():
    a = load_config(FactoryConfig, None, ["seed=1"])
    b = load_config(FactoryConfig, None, ["seed=1"])
    c = load_config(FactoryConfig, None, ["seed=2"])
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_cli_reports_config_error_without_traceback(cli):
    proc = cli("config", "--set", "nope=1")
    assert proc.returncode == 2
    assert "'nope': unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_yaml_syntax_errors_are_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("seed: 1\ngeneration: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_factory_config(path)
    assert "not valid YAML" in str(info.value) and "line" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_override("a=[1, 2")
    assert "\n" not in str(info.value)


def test_errors_say_whether_the_key_came_from_the_file_or_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: -1\n")
    with pytest.raises(ConfigError) as info:
        load_factory_config(path, ["run.bogus=1"])
    text = str(info.value)
    assert f"{path}: 'seed'" in text
    assert "--set: 'run.bogus': unknown key" in text
