"""Is a spec stored in a result file (through JSON) this spec? `--resume` asks it of every
finished cell. A field added to the spec dataclasses since the cell ran is missing from the
stored copy: it counts as equal when this spec leaves it at its default, since the run then did
what this spec asks. Any other difference, a field since removed included, is a different spec.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def same_spec(stored: Any, spec: Any) -> bool:
    """Whether `stored` (a spec as json.loads gave it back) describes `spec` (a dataclass, or
    a value inside one)."""
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        if not isinstance(stored, dict):
            return False
        fields = dataclasses.fields(spec)
        if set(stored) - {f.name for f in fields}:
            return False
        for field in fields:
            value = getattr(spec, field.name)
            if field.name in stored:
                if not same_spec(stored[field.name], value):
                    return False
            elif _default(field) is dataclasses.MISSING or _as_json(value) != _as_json(_default(field)):
                return False
        return True
    if isinstance(spec, (list, tuple)):
        return (isinstance(stored, list) and len(stored) == len(spec)
                and all(same_spec(s, v) for s, v in zip(stored, spec, strict=True)))
    if isinstance(spec, dict):
        return (isinstance(stored, dict) and set(stored) == {str(k) for k in spec}
                and all(same_spec(stored[str(k)], v) for k, v in spec.items()))
    return stored == _as_json(spec)
