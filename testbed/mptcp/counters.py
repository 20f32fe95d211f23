"""Per-connection counters, named like the kernel's MPTcpExt counters where one matches.

Names that have no kernel counterpart are listed in OWN_COUNTERS so a report can tell them
apart from what `nstat` would show for a Linux endpoint.
"""

from __future__ import annotations

KERNEL_COUNTERS = (
    "MPCapableSYNRX", "MPCapableSYNTX", "MPCapableSYNACKRX", "MPCapableACKRX",
    "MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPCapableSYNTXDrop",
    "MPJoinSynRx", "MPJoinSynAckRx", "MPJoinSynAckHMacFailure", "MPJoinAckRx",
    "MPJoinAckHMacFailure", "MPJoinNoTokenFound", "DSSNotMatching", "InfiniteMapTx",
    "InfiniteMapRx", "DataCsumErr", "AddAddr", "AddAddrTx", "EchoAdd", "EchoAddTx",
    "AddAddrDrop", "RmAddr", "RmAddrTx", "RmSubflow", "MPPrioTx", "MPPrioRx", "MPFailTx",
    "MPFailRx", "MPFastcloseTx", "MPFastcloseRx", "MPRstTx", "MPRstRx", "DSSNoMatchTCP",
    "DuplicateData", "OFOQueue", "SubflowStale", "SubflowRecover",
    "MPJoinSynTx", "DssFallback", "MPCapableDataFallback",
)
OWN_COUNTERS = (
    "MPFastcloseRxIgnored",  # MP_FASTCLOSE whose key was not ours
    "Reinjected",  # data chunks sent again on another subflow
    "SubflowResetMiddlebox",  # join subflows reset with reason 6
    "DSSNoChecksum",  # mappings without the negotiated checksum (subflow reset)
)


def new_counters() -> dict[str, int]:
    return dict.fromkeys(KERNEL_COUNTERS + OWN_COUNTERS, 0)
