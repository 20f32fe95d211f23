"""One MPTCP connection reconstructed from a capture: keys, tokens, IDSNs, its subflows, its
data level per direction, and what went wrong (fallback, violations).

Side 0 of a connection is the end that sent the initial SYN with MP_CAPABLE (the client), side
1 the one that answered. Keys come from the MP_CAPABLE handshake (SYN/ACK: the server's; third
ACK or first data: both), tokens and IDSNs from the keys (RFC 8684 3.1), and joins are matched
to a connection by the token in their SYN.
"""

from __future__ import annotations

from typing import Any

from testbed.analyze.datalevel import DataDirection
from testbed.wire import join_ack_hmac, join_synack_hmac, key_to_idsn, key_to_token


class Connection:
    def __init__(self, index: int, version: int) -> None:
        self.index = index
        self.version = version  # 1, or 0 for RFC 6824 (analysed at the TCP level only)
        self.keys: list[int | None] = [None, None]
        self.tokens: list[int | None] = [None, None]
        self.checksums = False
        self.subflows: list[Any] = []  # testbed.analyze.subflow.Subflow
        self.data = (DataDirection(None), DataDirection(None))
        self.fallback: str | None = None  # how MPTCP fell back, if it did
        self.fallback_ts: float | None = None
        self.mp_fail: list[dict[str, Any]] = []
        self.fastclose = False
        self.violations: dict[str, int] = {}
        self.checksum_checked = 0
        self.checksum_not_verifiable = 0

    def learn_key(self, side: int, key: int) -> bool:
        """Record side's key; True when it is new (tokens and IDSN follow from it)."""
        if self.keys[side] is not None:
            return False
        self.keys[side] = key
        self.tokens[side] = key_to_token(key)
        self.data[side].idsn = key_to_idsn(key)
        self.data[side].last_dsn = self.data[side].idsn
        return True

    def violation(self, name: str) -> bool:
        """Count a protocol violation; True the first time (to put it on the timeline)."""
        count = self.violations.get(name, 0)
        self.violations[name] = count + 1
        return count == 0

    def check_joins(self) -> list[tuple[Any, str]]:
        """Join subflows whose HMACs do not match the keys: (subflow, which HMAC)."""
        wrong = []
        if None in self.keys:
            return wrong
        for subflow in self.subflows:
            join = subflow.join
            if subflow.role != "join" or "nonce_initiator" not in join:
                continue
            initiator = subflow.conn_side[0]
            key_initiator, key_responder = self.keys[initiator], self.keys[1 - initiator]
            if "synack_hmac" in join and "nonce_responder" in join:
                expected = join_synack_hmac(key_responder, key_initiator, join["nonce_responder"],
                                            join["nonce_initiator"])
                join["synack_hmac_ok"] = expected == join["synack_hmac"]
                if not join["synack_hmac_ok"]:
                    wrong.append((subflow, "SYN/ACK"))
            if "ack_hmac" in join and "nonce_responder" in join:
                expected_ack = join_ack_hmac(key_initiator, key_responder, join["nonce_initiator"],
                                             join["nonce_responder"])
                join["ack_hmac_ok"] = expected_ack == join["ack_hmac"]
                if not join["ack_hmac_ok"]:
                    wrong.append((subflow, "third ACK"))
        return wrong

    def summary(self) -> dict[str, Any]:
        first = self.subflows[0] if self.subflows else None
        return {
            "index": self.index,
            "mptcp_version": self.version,
            "client": first.endpoint(0) if first else None,
            "server": first.endpoint(1) if first else None,
            "keys": [None if k is None else f"0x{k:016x}" for k in self.keys],
            "tokens": [None if t is None else f"0x{t:08x}" for t in self.tokens],
            "idsn": [None if d.idsn is None else f"0x{d.idsn:016x}" for d in self.data],
            "dss_checksums": self.checksums,
            "dss_checksums_verified": self.checksum_checked,
            "dss_checksums_not_verifiable": self.checksum_not_verifiable,
            "subflows": [s.index for s in self.subflows],
            "fallback": self.fallback,
            "mp_fail": self.mp_fail,
            "fastclose": self.fastclose,
            "violations": dict(sorted(self.violations.items())),
            "data": [{"from": "client", **self.data[0].summary()},
                     {"from": "server", **self.data[1].summary()}],
        }
