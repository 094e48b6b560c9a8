"""Config loading: YAML files validated by typed pydantic models.

Every section model derives from :class:`StrictModel` (unknown keys are
errors). :func:`load_config` reads a YAML file, applies ``--set a.b=value``
overrides, validates, and raises :class:`ConfigError` naming the offending key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from synthface.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line from a YAML error: what is wrong and where (PyYAML's own text spans lines)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], value); the value is YAML."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set has an empty key in {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({_yaml_problem(exc)})") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b=value`` override applied."""
    data = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for text in overrides or []:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise ConfigError(f"--set {'.'.join(path)}: '{where}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def format_validation_error(exc: ValidationError, source: str = "config", overridden: set[str] | None = None) -> str:
    """One line per problem, each naming its key and where it came from
    (``--set`` when an override set that key, else ``source``)."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        origin = "--set" if key in (overridden or set()) else source
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        got = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{origin}: '{key}': {msg}{shown}")
    return "\n".join(lines)


def validate(model_cls: type[M], data: dict[str, Any], source: str = "config", overridden: set[str] | None = None) -> M:
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, overridden)) from None


def load_config(model_cls: type[M], path: str | Path | None = None, overrides: list[str] | None = None) -> M:
    """Load ``path`` (optional), apply ``overrides``, validate into ``model_cls``."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    overridden = {".".join(parse_override(text)[0]) for text in overrides or []}
    return validate(model_cls, data, source=str(path) if path is not None else "config", overridden=overridden)


def hash_json(data: Any) -> str:
    """sha256 of ``data`` as sorted, compact JSON: the one hash of configs and records."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_hash(model: BaseModel) -> str:
    """A stable hash of a validated config (sorted JSON), for run identity checks."""
    return hash_json(model.model_dump(mode="json"))


def changed_keys(old: Any, new: Any, prefix: str = "", *, with_values: bool = True) -> list[str]:
    """Dotted config keys whose values differ, e.g. ``["run.images_per_id: 8 -> 4"]``
    (``with_values=False``: ``["run.images_per_id"]``)."""
    if isinstance(old, dict) or isinstance(new, dict):
        old = old if isinstance(old, dict) else {}
        new = new if isinstance(new, dict) else {}
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += changed_keys(old.get(key), new.get(key), f"{prefix}{key}.", with_values=with_values)
        return out
    if old == new:
        return []
    return [f"{prefix[:-1]}: {old!r} -> {new!r}" if with_values else prefix[:-1]]


def parse_list(text: str | None, option: str, kind: type = str, *, minimum: float | None = None) -> list[Any] | None:
    """A comma-separated command-line list (``--sizes 1000,10000``) as values of ``kind``.

    ``None`` or an empty string gives ``None`` (the caller's default). Blank items are
    skipped; an item that does not convert, or is below ``minimum``, is one ConfigError
    naming the option.
    """
    if text is None or not str(text).strip():
        return None
    items = [part.strip() for part in str(text).split(",") if part.strip()]
    try:
        values = [kind(item) for item in items]
    except ValueError:
        raise ConfigError(f"{option}: expected a comma-separated list of {kind.__name__} values, got {text!r}") from None
    if minimum is not None and any(v < minimum for v in values):
        raise ConfigError(f"{option}: every value must be >= {minimum}, got {text!r}")
    return values
