"""The stream settings as one flat table, generated from `StreamConfig`'s `setting(...)` fields.

Every place that exposes the live runtime's settings reads this table instead of listing them again: the
ROS 2 node's declared parameters and its config/params.yaml (emo_edge_ros.params), the `emo-edge run`
options (emo_edge.cli) and the bag replay's node parameters (emo_edge.bench.replay). Flat values are what a
ROS parameter or a CLI option can hold: None is written as the field's `none_as` (0 or "").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from emo_edge.runtime.stream import StreamConfig


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any  # flat: None already replaced by none_as
    type: type  # bool, int, float or str
    help: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    above: float | None = None
    none_as: Any = None

    @property
    def description(self) -> str:
        """The help with the valid values, as the node's parameter descriptor and the CLI's --help show it."""
        if self.choices:
            return f"{self.help}: {' | '.join(self.choices)}"
        bounds = [f"{op} {_num(x)}" for op, x in ((">=", self.low), (">", self.above), ("<=", self.high))
                  if x is not None]
        if bounds and self.none_as is not None:  # the flat value standing for None is valid too (the help says how)
            bounds[-1] += f" or {self.none_as!r}"
        return f"{self.help} [{', '.join(bounds)}]" if bounds else self.help


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def stream_settings() -> list[Setting]:
    """StreamConfig's fields in declaration order, with flat defaults."""
    out = []
    for f in dataclasses.fields(StreamConfig):
        m = f.metadata
        if "help" not in m:
            raise TypeError(f"StreamConfig.{f.name} is declared without setting(default, help, ...): every stream "
                            "setting needs its description and range (they become the node's parameters and CLI)")
        default = f.default if f.default is not None else m["none_as"]
        out.append(Setting(f.name, default, type(default), m["help"], tuple(m["choices"]), m["low"], m["high"],
                           m["above"], m["none_as"]))
    return out


SETTINGS: dict[str, Setting] = {s.name: s for s in stream_settings()}


def to_flat(cfg: StreamConfig) -> dict[str, Any]:
    """A StreamConfig as flat values (None -> none_as), keyed by setting name."""
    return {name: (s.none_as if getattr(cfg, name) is None else getattr(cfg, name)) for name, s in SETTINGS.items()}


def from_flat(values: dict[str, Any]) -> StreamConfig:
    """A StreamConfig from flat values (any subset; the rest default). none_as -> None; ints are accepted for
    floats (a ROS parameter given as 2 instead of 2.0); anything else of the wrong type is refused by name."""
    unknown = set(values) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown stream setting(s) {sorted(unknown)}; valid: {', '.join(SETTINGS)}")
    kw = {}
    for name, v in values.items():
        s = SETTINGS[name]
        if s.type is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if type(v) is not s.type:
            raise ValueError(f"stream setting {name}={v!r} must be a {s.type.__name__}")
        kw[name] = None if s.none_as is not None and v == s.none_as else v
    return StreamConfig(**kw)


def yaml_scalar(v: Any) -> str:
    """A flat value as YAML text, as params.yaml and `--ros-args -p name:=value` take it: strings always quoted
    ('off', 'none' or '' would otherwise not be read as strings), bools lowercase."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)
