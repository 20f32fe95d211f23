"""Typed middlebox parameters: frozen dataclasses checked strictly against experiment specs.

Experiment specs are TOML written by people, so a misspelt or mistyped parameter must stop the
run with a message that names the middlebox, the parameter and what is allowed, instead of
being swallowed the way `**kwargs` would (see STYLE.md on Mininet). Each middlebox declares
one frozen dataclass; the field's type hint is the contract (int, float, bool, str, Literal
choices, tuples of those, `X | None`), `param()` adds the documentation and numeric bounds,
and an optional `check()` method on the dataclass validates combinations by raising
`ParamError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from middleboxes.contract import Direction

_NO_DEFAULT: Any = dataclasses.MISSING


class MiddleboxSpecError(ValueError):
    """A middlebox spec that cannot be built; the message is one line and says what to fix."""


class ParamError(ValueError):
    """A bad value for one parameter, raised inside parsing and `check()` methods."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


def param(default: Any = _NO_DEFAULT, doc: str = "", *, minimum: float | None = None,
          maximum: float | None = None) -> Any:
    """A dataclass field carrying its documentation and inclusive numeric bounds."""
    metadata = {"doc": doc, "minimum": minimum, "maximum": maximum}
    if isinstance(default, (list, tuple)):
        frozen_default = tuple(default)
        return dataclasses.field(default=frozen_default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class CommonParams:
    """Parameters every middlebox accepts."""

    # Triggers (middleboxes.triggers): when the box acts. Outside its window a box passes
    # packets unchanged and counts them as `inactive`.
    after_bytes: int = param(0, "act on a flow's packets only once this box has seen this many "
                                "payload bytes of that flow (TCP connection = one subflow), both "
                                "directions summed, retransmissions included", minimum=0)
    after_s: float = param(0.0, "act on a flow's packets only from this many seconds after the "
                                "box saw the flow's first packet (normally its SYN)", minimum=0.0)
    until_s: float | None = param(None, "stop acting on a flow this many seconds after the box "
                                        "saw its first packet (must be > after_s)", minimum=0.0)
    flows: Literal["all", "initial", "join"] = param(
        "all", "which flows the box acts on: all, initial (flows whose SYN had no MP_JOIN) or "
               "join (MP_JOIN subflows)")
    active: bool = param(True, "whether the box acts when the run starts; a [[timeline]] entry "
                               "{ at_s = T, middlebox = \"NODE.INDEX\", active = ... } switches it")
    log_changes: bool = param(False, "record a per-packet change log (time, direction, flow, "
                                     "what changed) for result.json")
    log_limit: int = param(1000, "keep at most this many change-log entries (the first ones)",
                           minimum=1)


def directions_of(choice: str) -> frozenset[Direction]:
    """The directions a `direction` parameter (upstream, downstream, both) selects."""
    if choice == "both":
        return frozenset(Direction)
    return frozenset({Direction(choice)})


# --- Parsing ---------------------------------------------------------------------------------
P = TypeVar("P")


def parse_params(middlebox: str, params_type: type[P], raw: Mapping[str, Any] | None) -> P:
    """Build a params dataclass from spec values, or raise MiddleboxSpecError saying why."""
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise MiddleboxSpecError(
            f"middlebox '{middlebox}': params must be a table of name = value, "
            f"got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(params_type)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(params_type)
    common = {f.name for f in dataclasses.fields(CommonParams)}
    valid = ", ".join(sorted(set(fields) - common)) + "; every box also takes: " \
        + ", ".join(sorted(common))
    for name in raw:
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise MiddleboxSpecError(
                f"middlebox '{middlebox}': unknown parameter '{name}'{hint}; valid: {valid}")
    values: dict[str, Any] = {}
    for name, spec_field in fields.items():
        if name not in raw:
            if spec_field.default is dataclasses.MISSING:
                raise MiddleboxSpecError(
                    f"middlebox '{middlebox}': missing required parameter '{name}' "
                    f"({describe_type(hints[name])}): {spec_field.metadata.get('doc', '')}")
            continue
        try:
            value = _convert(raw[name], hints[name], name)
            _check_bounds(value, spec_field, name)
        except ParamError as error:
            raise MiddleboxSpecError(
                f"middlebox '{middlebox}': parameter '{error.param}': {error.message}") from None
        values[name] = value
    params = params_type(**values)
    check = getattr(params, "check", None)
    try:
        if check is not None:
            check()
        check_triggers(params)
    except ParamError as error:
        raise MiddleboxSpecError(
            f"middlebox '{middlebox}': parameter '{error.param}': {error.message}") from None
    return params


def check_triggers(params: Any) -> None:
    """The trigger combinations no box could honour (every box, whatever its own check())."""
    if not isinstance(params, CommonParams):
        return
    if params.until_s is not None and params.until_s <= params.after_s:
        raise ParamError("until_s", f"got {params.until_s}, must be greater than after_s "
                                    f"({params.after_s}): the box would never act")


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _convert(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if _is_union(hint):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, name)
            except ParamError as error:
                errors.append(error.message)
        raise ParamError(name, "; or ".join(errors))
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices or type(value) is bool:
            raise ParamError(name, f"got {value!r}, allowed: {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        element = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise ParamError(name, f"expected a list of {describe_type(element)}, "
                                   f"got {type(value).__name__} {value!r}")
        return tuple(_convert(item, element, name) for item in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamError(name, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(name, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(name, f"expected a number, got {type(value).__name__} {value!r}")
        try:
            number = float(value)  # a TOML integer may be beyond a float's range
        except OverflowError:
            raise ParamError(name, f"{value} is too large") from None
        if not math.isfinite(number):
            raise ParamError(name, f"expected a finite number, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ParamError(name, f"expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"parameter '{name}' has a type the spec parser does not handle: {hint!r}")


def _check_bounds(value: Any, spec_field: dataclasses.Field[Any], name: str) -> None:
    minimum = spec_field.metadata.get("minimum")
    maximum = spec_field.metadata.get("maximum")
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        if minimum is not None and item < minimum:
            raise ParamError(name, f"got {item}, must be at least {minimum}")
        if maximum is not None and item > maximum:
            raise ParamError(name, f"got {item}, must be at most {maximum}")


def describe_type(hint: Any) -> str:
    """A short human-readable type, used in errors and in `testbed middleboxes list`."""
    origin = typing.get_origin(hint)
    if _is_union(hint):
        parts = [describe_type(h) for h in typing.get_args(hint) if h is not type(None)]
        text = " or ".join(parts)
        return f"{text} (optional)" if type(None) in typing.get_args(hint) else text
    if origin is Literal:
        return "one of " + "|".join(map(str, typing.get_args(hint)))
    if origin is tuple:
        return f"list of ({describe_type(typing.get_args(hint)[0])})"
    return getattr(hint, "__name__", str(hint))


def describe_params(params_type: type) -> list[dict[str, Any]]:
    """Name, type, default, bounds and documentation of each parameter, in declaration order."""
    hints = typing.get_type_hints(params_type)
    common = {f.name for f in dataclasses.fields(CommonParams)}
    own_first = sorted(dataclasses.fields(params_type), key=lambda f: f.name in common)
    described = []
    for spec_field in own_first:
        required = spec_field.default is dataclasses.MISSING
        default = None if required else spec_field.default
        if isinstance(default, tuple):
            default = list(default)
        entry: dict[str, Any] = {
            "name": spec_field.name,
            "type": describe_type(hints[spec_field.name]),
            "required": required,
            "default": default,
            "doc": spec_field.metadata.get("doc", ""),
        }
        for bound in ("minimum", "maximum"):
            if spec_field.metadata.get(bound) is not None:
                entry[bound] = spec_field.metadata[bound]
        described.append(entry)
    return described
