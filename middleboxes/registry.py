"""The catalogue: one explicit table from spec name to middlebox class, and its builder.

Experiments name middleboxes by these strings. The table is written out here, not filled by
import side effects, so reading this file tells you everything an experiment can ask for.
"""

from __future__ import annotations

import difflib
import random
import sys
from collections.abc import Mapping
from typing import Any

from middleboxes.catalogue_base import MiddleboxBase
from middleboxes.coalesce import Coalesce
from middleboxes.contract import Middlebox
from middleboxes.impairments import Delay, Drop
from middleboxes.nat import Nat
from middleboxes.nat64 import Nat64
from middleboxes.nptv6 import Nptv6
from middleboxes.rewrite_payload import RewritePayload
from middleboxes.rewrite_seq import RewriteSeq
from middleboxes.spec import CommonParams, MiddleboxSpecError, describe_params, parse_params
from middleboxes.split import Split
from middleboxes.strip_options import StripOptions
from middleboxes.syn_firewall import SynFirewall
from middleboxes.triggers import gate

MIDDLEBOXES: dict[str, type[MiddleboxBase]] = {
    "nat": Nat,
    "nat64": Nat64,
    "nptv6": Nptv6,
    "strip_options": StripOptions,
    "rewrite_seq": RewriteSeq,
    "coalesce": Coalesce,
    "split": Split,
    "rewrite_payload": RewritePayload,
    "syn_firewall": SynFirewall,
    "drop": Drop,
    "delay": Delay,
}


def _middlebox_class(name: str) -> type[MiddleboxBase]:
    cls = MIDDLEBOXES.get(name) if isinstance(name, str) else None
    if cls is None:
        close = difflib.get_close_matches(str(name), list(MIDDLEBOXES), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise MiddleboxSpecError(f"unknown middlebox {name!r}{hint}; known: "
                                 + ", ".join(sorted(MIDDLEBOXES)))
    return cls


def parse_middlebox_params(name: str, params: Mapping[str, Any] | None) -> CommonParams:
    """Validate a spec's params without building the box (for `testbed check`)."""
    cls = _middlebox_class(name)
    return parse_params(name, cls.params_type, params)


def build_middlebox(name: str, params: Mapping[str, Any] | None,
                    rng: random.Random, *, switchable: bool = False) -> Middlebox:
    """A ready middlebox from a spec's `type` and `params`; MiddleboxSpecError if invalid.

    A box with trigger parameters (after_bytes, after_s, until_s, flows, active) comes behind
    its gate (middleboxes.triggers.Triggered); `switchable` gates it even without them, so a
    timeline can switch it on and off (`set_active`)."""
    if not isinstance(rng, random.Random):
        raise TypeError(f"build_middlebox needs a random.Random, got {type(rng).__name__}")
    cls = _middlebox_class(name)
    parsed = parse_params(name, cls.params_type, params)
    return gate(cls(parsed, rng), parsed, switchable=switchable)


def describe_middleboxes() -> list[dict[str, Any]]:
    """Name, imitated device, summary and parameters of each middlebox, for docs and the CLI."""
    described = []
    for name, cls in MIDDLEBOXES.items():
        module_doc = sys.modules[cls.__module__].__doc__ or ""
        described.append({
            "name": name,
            "imitates": cls.imitates,
            "summary": module_doc.strip().splitlines()[0] if module_doc.strip() else "",
            "description": module_doc.strip(),
            "parameters": describe_params(cls.params_type),
        })
    return described
