"""What each probe's scenario should do to the Linux target's MPTcpExt counters.

Taken from the MIB a packetdrill script checks for the same scenario where there is one
(dss_drop_after_data_fallback_server.pkt: DssFallback == 1) and otherwise from the counter
Linux names for the event (net/mptcp/mib.c). A kernel run records, per probe, whether the
counter deltas agree; a disagreement is evidence next to the verdict, not a verdict.
"""

from __future__ import annotations

import re

EXPECTED: dict[str, dict[str, str]] = {
    "dss_mapping_ahead": {"OFOQueue": ">=1"},
    "dss_duplicate": {"DuplicateData": ">=1"},
    "dss_checksum_bad": {"DataCsumErr": ">=1", "MPFailTx": ">=1"},
    "dss_checksum_bad_join": {"DataCsumErr": ">=1", "MPFailTx": ">=1", "MPRstTx": ">=1"},
    "dss_infinite_mapping": {"InfiniteMapRx": ">=1"},
    "dss_stripped_first_data": {"DssFallback": ">=1"},
    "dss_stripped_after_data": {"DssFallback": "=1"},
    "join_unknown_token": {"MPJoinNoTokenFound": ">=1"},
    "join_bad_ack_hmac": {"MPJoinAckHMacFailure": ">=1"},
    "join_backup": {"MPJoinSynBackupRx": ">=1"},
    "add_addr_echo": {"AddAddr": ">=1", "EchoAddTx": ">=1"},
    "add_addr_bad_hmac": {"AddAddr": "=0", "EchoAddTx": "=0"},
    "add_addr_no_hmac": {"AddAddr": "=0", "EchoAddTx": "=0"},
    "add_addr_port": {"AddAddr": ">=1", "PortAdd": ">=1"},
    "add_addr_target_hmac": {"AddAddrTx": ">=1", "EchoAdd": ">=1"},
    "add_addr_retransmit": {"AddAddrTx": ">=2"},
    "remove_addr_unknown": {"RmAddr": ">=1"},
    "remove_addr_subflow": {"RmAddr": ">=1"},
    "mp_prio_backup": {"MPPrioRx": ">=1"},
    "fastclose_right_key": {"MPFastcloseRx": ">=1"},
    "fastclose_wrong_key": {"MPFastcloseRx": "=0"},
    "fastclose_multi": {"MPFastcloseRx": ">=1"},
    "fastclose_rst": {"MPFastcloseRx": ">=1"},
    "tcprst_join": {"MPRstRx": ">=1"},
    "tcprst_initial": {"MPRstRx": ">=1"},
    "client_synack_no_mpc": {"MPCapableFallbackSYNACK": "=1"},
    "client_join_bad_synack_hmac": {"MPJoinSynAckHMacFailure": ">=1"},
    "client_join_third_ack": {"MPJoinSynAckRx": ">=1"},
}

_RULE = re.compile(r"^(>=|=)(\d+)$")


def check(name: str, deltas: dict[str, int], available: set[str] | None = None) -> dict[str, object] | None:
    """{"expected": {...}, "observed": {...}, "agree": bool} for a probe with expectations.
    `available`: the counter names the target's kernel has; one it lacks (an older kernel:
    6.1 has no DssFallback, EchoAddTx, AddAddrTx) is listed under "absent", not disagreed with."""
    wanted = EXPECTED.get(name)
    if not wanted:
        return None
    observed: dict[str, int] = {}
    absent: list[str] = []
    agree = True
    for counter, rule in wanted.items():
        match = _RULE.match(rule)
        assert match, rule
        op, value = match.group(1), int(match.group(2))
        if available is not None and f"MPTcpExt{counter}" not in available:
            absent.append(counter)
            continue
        got = deltas.get(f"MPTcpExt{counter}", 0)
        observed[counter] = got
        agree = agree and (got >= value if op == ">=" else got == value)
    return {"expected": dict(wanted), "observed": observed, "agree": agree,
            **({"absent": absent} if absent else {})}
