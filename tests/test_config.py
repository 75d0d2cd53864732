"""Tests for crashgym.config: strict TOML -> frozen dataclass loading."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import pytest

from crashgym.config import (
    ConfigError,
    available,
    check_schema_version,
    from_mapping,
    load_toml,
    require,
    resolve_config_path,
    to_mapping,
)


@dataclasses.dataclass(frozen=True)
class Fees:
    taker: float = 0.0005
    maker: float = 0.0002

    def validate(self) -> None:
        require(self.taker >= 0.0, "taker", "must be >= 0")
        require(self.maker <= self.taker, "maker", "must not exceed taker")


@dataclasses.dataclass(frozen=True)
class Inner:
    depth: int = 3
    weights: tuple[float, ...] = (0.5, 0.5)
    fees: Fees = dataclasses.field(default_factory=Fees)

    def validate(self) -> None:
        require(len(self.weights) == self.depth - 1, "weights", "must have depth - 1 entries")


@dataclasses.dataclass(frozen=True)
class Top:
    name: str = "default"
    leverage: float = 10.0
    steps: int = 100
    adl: bool = True
    seeds: tuple[int, ...] = (0, 1)
    margin: Literal["isolated", "cross"] = "cross"
    inner: Inner = dataclasses.field(default_factory=Inner)

    def validate(self) -> None:
        require(self.leverage > 0, "leverage", "must be positive")
        if self.steps > 10_000:
            raise ValueError("steps is far too many")


@dataclasses.dataclass(frozen=True)
class Required:
    size: float


def write(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(path: Path, cls: type = Top, **kw):
    return from_mapping(cls, load_toml(path), source=str(path), **kw)


# --- happy paths -------------------------------------------------------------


def test_defaults_when_empty():
    assert from_mapping(Top, {}) == Top()


def test_full_file(tmp_path):
    path = write(
        tmp_path,
        """
        name = "oct10"
        leverage = 25          # int accepted for float
        steps = 500
        adl = false
        seeds = [3, 4, 5]
        margin = "isolated"
        [inner]
        depth = 4
        weights = [1, 0.25, 0.5]
        [inner.fees]
        taker = 0.001
        """,
    )
    cfg = load(path)
    assert cfg == Top(
        name="oct10",
        leverage=25.0,
        steps=500,
        adl=False,
        seeds=(3, 4, 5),
        margin="isolated",
        inner=Inner(depth=4, weights=(1.0, 0.25, 0.5), fees=Fees(taker=0.001)),
    )
    assert isinstance(cfg.leverage, float)
    assert all(isinstance(w, float) for w in cfg.inner.weights)
    assert isinstance(cfg.seeds, tuple)


def test_base_overrides_only_given_fields():
    base = Top(name="base", leverage=5.0, inner=Inner(depth=2, weights=(1.0,), fees=Fees(0.01, 0.0)))
    cfg = from_mapping(Top, {"steps": 7, "inner": {"fees": {"maker": 0.005}}}, base=base)
    assert cfg.name == "base" and cfg.leverage == 5.0 and cfg.steps == 7
    assert cfg.inner.depth == 2 and cfg.inner.weights == (1.0,)
    assert cfg.inner.fees == Fees(taker=0.01, maker=0.005)


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"f\.toml: missing key 'size'"):
        from_mapping(Required, {}, source="f.toml")
    assert from_mapping(Required, {}, base=Required(2.0)) == Required(2.0)


# --- unknown keys ------------------------------------------------------------


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, "levrage = 3.0\n")
    with pytest.raises(ConfigError) as e:
        load(path)
    msg = str(e.value)
    assert str(path) in msg and "'levrage'" in msg
    assert "known: adl, inner, leverage, margin, name, seeds, steps" in msg


def test_unknown_nested_key(tmp_path):
    path = write(tmp_path, "[inner.fees]\ntakr = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'inner\.fees\.takr' \(known: maker, taker\)") as e:
        load(path)
    assert str(path) in str(e.value)


def test_prefix_is_prepended():
    with pytest.raises(ConfigError, match=r"'env\.bogus'"):
        from_mapping(Top, {"bogus": 1}, prefix="env")


# --- wrong types -------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key", "expected"),
    [
        ("leverage = true", "leverage", "float"),
        ("leverage = '10'", "leverage", "float"),
        ("steps = 1.5", "steps", "int"),
        ("steps = true", "steps", "int"),
        ("adl = 1", "adl", "bool"),
        ("name = 3", "name", "str"),
        ("seeds = 3", "seeds", "list of int"),
        ("seeds = [1, 2.0]", r"seeds[1]", "int"),
        ("margin = 'portfolio'", "margin", "one of 'isolated', 'cross'"),
        ("inner = 3", "inner", "table"),
        ("[inner]\nweights = [0.5, 'x']", r"inner.weights[1]", "float"),
        ("[inner.fees]\ntaker = false", "inner.fees.taker", "float"),
    ],
)
def test_wrong_type_names_key(tmp_path, toml, key, expected):
    path = write(tmp_path, toml + "\n")
    with pytest.raises(ConfigError) as e:
        load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: '{key}' must be")
    assert expected in msg


def test_wrong_type_shows_value():
    with pytest.raises(ConfigError, match=r"got True \(bool\)"):
        from_mapping(Top, {"leverage": True})


def test_top_level_must_be_mapping():
    with pytest.raises(ConfigError, match="must be a table"):
        from_mapping(Top, [1, 2])  # type: ignore[arg-type]


# --- validation --------------------------------------------------------------


def test_require_raises_value_error():
    require(True, "x", "never")
    with pytest.raises(ValueError, match=r"^'x' must be positive$"):
        require(False, "x", "must be positive")


def test_validate_top_level(tmp_path):
    path = write(tmp_path, "leverage = -1.0\n")
    with pytest.raises(ConfigError, match=r"'leverage' must be positive") as e:
        load(path)
    assert str(e.value).startswith(f"{path}: ")


def test_validate_plain_value_error(tmp_path):
    path = write(tmp_path, "steps = 20000\n")
    with pytest.raises(ConfigError, match="steps is far too many") as e:
        load(path)
    assert str(e.value).startswith(f"{path}: ")


def test_validate_nested_adds_dotted_prefix(tmp_path):
    path = write(tmp_path, "[inner.fees]\nmaker = 0.1\n")
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(e.value) == f"{path}: 'inner.fees.maker' must not exceed taker"

    path = write(tmp_path, "[inner]\ndepth = 5\n")
    with pytest.raises(ConfigError, match=r"'inner\.weights' must have depth - 1 entries"):
        load(path)


CALLS: list[str] = []


@dataclasses.dataclass(frozen=True)
class Leaf:
    x: int = 0

    def validate(self) -> None:
        CALLS.append("leaf")


@dataclasses.dataclass(frozen=True)
class Root:
    leaf: Leaf = dataclasses.field(default_factory=Leaf)

    def validate(self) -> None:
        CALLS.append("root")


def test_validate_runs_bottom_up():
    CALLS.clear()
    from_mapping(Root, {})
    assert CALLS == ["leaf", "root"]


def test_base_is_validated_after_override():
    with pytest.raises(ConfigError, match=r"'inner\.weights'"):
        from_mapping(Top, {"inner": {"depth": 9}}, base=Top())


# --- files -------------------------------------------------------------------


def test_toml_syntax_error_names_file(tmp_path):
    path = write(tmp_path, "leverage = = 3\n")
    with pytest.raises(ConfigError, match="invalid TOML") as e:
        load_toml(path)
    assert str(path) in str(e.value)


def test_missing_file_names_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml"):
        load_toml(tmp_path / "nope.toml")


@pytest.fixture
def configs(tmp_path, monkeypatch):
    root = tmp_path / "configs"
    (root / "scenarios").mkdir(parents=True)
    (root / "scenarios" / "oct10.toml").write_text("schema_version = 1\n")
    (root / "scenarios" / "calm.toml").write_text("schema_version = 1\n")
    (root / "scenarios" / "notes.txt").write_text("not a config\n")
    monkeypatch.setenv("CRASHGYM_CONFIGS", str(root))
    return root


def test_available(configs):
    assert available("scenarios") == ["calm", "oct10"]
    assert available("rules") == []


def test_resolve_by_name(configs):
    assert resolve_config_path("oct10", "scenarios") == configs / "scenarios" / "oct10.toml"


def test_resolve_by_path(configs, tmp_path):
    other = write(tmp_path, "schema_version = 1\n", name="mine.toml")
    assert resolve_config_path(str(other), "scenarios") == other
    assert resolve_config_path(str(configs / "scenarios" / "calm.toml"), "rules").name == "calm.toml"


def test_resolve_relative_toml_path(configs, tmp_path, monkeypatch):
    write(tmp_path, "schema_version = 1\n", name="local.toml")
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("local.toml", "scenarios") == Path("local.toml")


def test_resolve_unknown_name_lists_available(configs):
    with pytest.raises(ConfigError, match=r"'oct11'.*available: calm, oct10"):
        resolve_config_path("oct11", "scenarios")


def test_resolve_missing_path(configs, tmp_path):
    with pytest.raises(ConfigError, match="absent.toml"):
        resolve_config_path(str(tmp_path / "absent.toml"), "scenarios")


def test_default_configs_root_is_repo_configs(monkeypatch):
    monkeypatch.delenv("CRASHGYM_CONFIGS", raising=False)
    with pytest.raises(ConfigError) as e:
        resolve_config_path("no-such-scenario-xyz", "scenarios")
    assert str(Path(__file__).resolve().parent.parent / "configs" / "scenarios") in str(e.value)


# --- schema version ----------------------------------------------------------


def test_schema_version_ok():
    data = {"schema_version": 1, "x": 2}
    check_schema_version(data, "a.toml")
    assert data == {"schema_version": 1, "x": 2}  # pops nothing


@pytest.mark.parametrize("data", [{}, {"schema_version": 2}, {"schema_version": "1"}, {"schema_version": True}])
def test_schema_version_bad(data):
    with pytest.raises(ConfigError, match=r"^a\.toml: .*schema_version"):
        check_schema_version(data, "a.toml")


def test_schema_version_other_supported():
    check_schema_version({"schema_version": 2}, "a.toml", supported=2)


# --- to_mapping --------------------------------------------------------------


def test_to_mapping_round_trip(tmp_path):
    cfg = Top(name="x", seeds=(7,), inner=Inner(depth=2, weights=(1.0,), fees=Fees(0.002, 0.001)))
    data = to_mapping(cfg)
    assert data["seeds"] == [7]
    assert data["inner"]["fees"] == {"taker": 0.002, "maker": 0.001}
    assert from_mapping(Top, json.loads(json.dumps(data))) == cfg


def test_to_mapping_rejects_non_dataclass():
    with pytest.raises(TypeError):
        to_mapping({"a": 1})


def test_scenario_with_a_liquidation_grid_too_small_is_refused(tmp_path):
    """256 buckets of 0.2% cover half the initial price: shorts would be liquidated at once."""
    from crashgym.config import ConfigError
    from crashgym.scenarios import load_scenario

    path = write(tmp_path, "schema_version = 1\n[shape]\nn_buckets = 256\n",
                 name="tiny_grid.toml")
    with pytest.raises(ConfigError, match=r"tiny_grid\.toml.*n_buckets=256.*bucket_width"):
        load_scenario(str(path))
