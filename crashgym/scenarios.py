"""Scenarios and market rules as TOML files under configs/ (strict schema, version 1).

A scenario file:

    schema_version = 1
    description = "..."
    [shape]            # MarketShape: array sizes (static; changing them recompiles)
    [market]           # MarketParams, nested tables per stage: [market.flow], [market.makers], ...

A rules file (configs/rules/) has `schema_version`, `description` and a `[market]` table
with the same schema; it is laid over the scenario's, key by key. Names of enumerated
values are written as strings (`adl_rule = "hyperliquid"`, `mode = "chunked"`,
`ioc_limit = "bankruptcy"`).
Unknown keys, wrong types and impossible values raise ConfigError naming file and key.

Settings (`settings=["market.flow.cancel_rate=0.01", "shape.n_levels=320"]`, the commands'
`--set`) are single keys laid over the result, by the same rules, last.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from crashgym.accounts import check_liquidation_grid
from crashgym.config import ConfigError, from_mapping, read_config
from crashgym.params import ADL_RULES, IOC_LIMITS, LIQUIDATION_MODES, MarketParams
from crashgym.types import MarketShape

_ENUMS = {("liquidation", "adl_rule"): ADL_RULES, ("liquidation", "mode"): LIQUIDATION_MODES,
          ("liquidation", "ioc_limit"): IOC_LIMITS}
_TOP_KEYS = {"schema_version", "description", "shape", "market"}


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    shape: MarketShape
    params: MarketParams
    rules: tuple[str, ...] = ()


def _read(name_or_path: str, kind: str) -> tuple[str, dict[str, Any]]:
    return read_config(name_or_path, kind, _TOP_KEYS)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_settings(settings: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` assignments as a nested mapping laid over a scenario file's tables.

    KEY is a dotted path from the file's top level, `shape.<field>` or
    `market.<table>.<field>`; VALUE is a TOML value (`0.01`, `320`, `true`, `[1.0, 2.0]`,
    `"hyperliquid"`), and a bare word that is not one is read as a string
    (`adl_rule=hyperliquid`). Only the path's form is checked here; the schema checks the
    key and the value when the scenario is built.
    """
    out: dict[str, Any] = {}
    for text in (settings,) if isinstance(settings, str) else settings:
        key, sep, value = text.partition("=")
        path = key.strip().split(".")
        if not sep or not value.strip():
            raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. market.flow.cancel_rate=0.01")
        if path[0] not in ("shape", "market") or len(path) != (2 if path[0] == "shape" else 3) or not all(path):
            raise ConfigError(f"--set {text!r}: KEY must be shape.<field> or market.<table>.<field>, got {key.strip()!r}")
        try:
            parsed = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value.strip()
        table = out
        for part in path[:-1]:
            table = table.setdefault(part, {})
        table[path[-1]] = parsed
    return out


def parse_sweep(text: str) -> tuple[str, list[str]]:
    """`--sweep KEY=V1,V2,...` as (KEY, the `--set` assignment of each value).

    KEY is a market key (`market.<table>.<field>`): `compare` runs every value in one batch,
    where the shape is static. Values are scalars; each is checked by the schema when its
    scenario is loaded.
    """
    key, sep, text_values = text.partition("=")
    key = key.strip()
    values = [v.strip() for v in text_values.split(",") if v.strip()]
    if not sep or not values:
        raise ConfigError(f"--sweep {text!r}: expected KEY=V1,V2,..., e.g. market.makers.withdraw_stress=2.2,3.8")
    if not key.startswith("market."):
        raise ConfigError(f"--sweep {text!r}: only market.<table>.<field> keys can vary inside one batch "
                          f"(the shape is static), got {key!r}")
    return key, [f"{key}={v}" for v in values]


def short_setting(setting: str) -> str:
    """`market.makers.withdraw_stress=2.2` as `withdraw_stress=2.2` (for labels)."""
    key, _, value = setting.partition("=")
    return f"{key.rsplit('.', 1)[-1]}={value}"


def _encode_enums(market: dict[str, Any], source: str) -> dict[str, Any]:
    market = copy.deepcopy(market)
    for (group, key), codes in _ENUMS.items():
        table = market.get(group)
        if isinstance(table, dict) and isinstance(table.get(key), str):
            name = table[key]
            if name not in codes:
                raise ConfigError(f"{source}: 'market.{group}.{key}' must be one of {sorted(codes)}, got {name!r}")
            table[key] = codes[name]
    return market


def market_params(market: Mapping[str, Any], source: str) -> MarketParams:
    return from_mapping(MarketParams, _encode_enums(dict(market), source), source=source, prefix="market")


def load_scenario(name_or_path: str, rules: str | list[str] | tuple[str, ...] | None = None,
                  overrides: Mapping[str, Any] | None = None, settings: Sequence[str] = ()) -> Scenario:
    """Load a scenario, optionally with rule files laid over it, a dict of overrides (same
    nested layout as the `[market]` table) and `--set` style settings (`parse_settings`)."""
    source, data = _read(name_or_path, "scenarios")
    market = dict(data.get("market", {}))
    rule_names = (rules,) if isinstance(rules, str) else tuple(rules or ())
    sources = [source]
    for rule in rule_names:
        rule_source, rule_data = _read(rule, "rules")
        if "shape" in rule_data:
            raise ConfigError(f"{rule_source}: rules may not set 'shape'")
        market = _merge(market, rule_data.get("market", {}))
        sources.append(rule_source)
    if overrides:
        market = _merge(market, overrides)
    shape_data = data.get("shape", {})
    shape_source = source
    if settings:
        laid = parse_settings(settings)
        market = _merge(market, laid.get("market", {}))
        shape_data = _merge(shape_data, laid.get("shape", {}))
        sources.append("--set")
        shape_source = f"{source} + --set"
    try:
        shape = from_mapping(MarketShape, shape_data, source=shape_source, prefix="shape")
    except ConfigError:
        raise
    except ValueError as e:  # MarketShape checks itself in __post_init__
        raise ConfigError(f"{shape_source}: {e}") from e
    params = market_params(market, " + ".join(sources))
    try:
        check_liquidation_grid(shape.n_buckets, params.liquidation, params.accounts)
    except ValueError as e:
        raise ConfigError(f"{' + '.join(sources)}: {e}") from None
    stem = name_or_path.rsplit("/", 1)[-1].removesuffix(".toml")
    return Scenario(name=stem, description=data.get("description", ""), shape=shape, params=params, rules=rule_names)
