"""Receive-side DSS mappings of one subflow: subflow byte ranges -> DSNs, checksums, fallback.

Mappings may arrive on any segment, in or out of order, duplicated (TSO copies) or several
per segment (a coalescing middlebox). They are recorded by subflow offset; in-order subflow
bytes are matched against them and handed to the connection as (DSN, bytes). With checksums
negotiated a mapping is delivered only when complete and verified (RFC 8684 3.3.1), so
corrupted bytes never reach the data level.

After fallback (`set_infinite`) every byte from a base offset maps linearly to DSNs.
"""

from __future__ import annotations

from dataclasses import dataclass

from testbed.wire.checksum import dss_checksum

MASK32 = 0xFFFFFFFF
HALF32 = 0x80000000


@dataclass(slots=True)
class Mapping:
    start: int  # subflow offset of the first mapped byte
    length: int  # payload bytes covered (data_len minus one for an in-mapping DATA_FIN)
    dsn: int
    data_len: int  # as carried in the option
    checksum: int | None
    data_fin: bool

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(slots=True)
class MappingOutcome:
    """What processing in-order bytes produced."""

    delivered: list[tuple[int, bytes]]
    data_fin_dsn: int | None = None
    checksum_failed: Mapping | None = None
    unmapped: bool = False


def unwrap_relative(relative32: int, near: int) -> int:
    """The subflow offset whose low 32 bits are `relative32`, closest to `near`."""
    delta = (relative32 - near) & MASK32
    if delta >= HALF32:
        delta -= 1 << 32
    return near + delta


class MappingReceiver:
    __slots__ = ("_by_start", "blocked", "checksum", "infinite_base", "mapped_seen",
                 "not_matching", "pending", "pending_offset")

    def __init__(self, *, checksum: bool, start_offset: int = 1) -> None:
        self.checksum = checksum
        self._by_start: dict[int, Mapping] = {}
        self.pending = bytearray()
        self.pending_offset = start_offset  # subflow offset of pending[0]
        self.infinite_base: tuple[int, int] | None = None  # (subflow offset, dsn)
        self.blocked = False  # after MP_FAIL: hold everything until an infinite mapping
        self.mapped_seen = False
        self.not_matching = 0

    def add(self, start: int, length: int, dsn: int, data_len: int, checksum: int | None,
            data_fin: bool) -> bool:
        """Record a mapping; False when it contradicts a known one (DSSNotMatching)."""
        self.mapped_seen = True
        if start == self.pending_offset and length > 0 and not self._by_start:
            # the usual case: the mapping of the next in-order bytes, nothing else known
            self._by_start[start] = Mapping(start, length, dsn, data_len, checksum, data_fin)
            return True
        end = start + length
        if end <= self.pending_offset and not data_fin:
            return True  # entirely old (a retransmission's copy)
        if start < self.pending_offset and not self.checksum:
            # a copy of a mapping partly consumed already (TSO copies one DSS onto every
            # segment it cuts): compare what is left of it with what is left of ours
            skip = self.pending_offset - start
            start, dsn, length = start + skip, dsn + skip, length - skip
        existing = self._by_start.get(start)
        if existing is not None:
            if existing.dsn == dsn and existing.data_len == data_len:
                return True
            self.not_matching += 1
            return False
        current = self._covering_fast(self.pending_offset)
        if (current is not None and current.start < end and start < current.end
                and (current.dsn - current.start != dsn - start or self.checksum)):
            self.not_matching += 1  # contradicts the mapping now being consumed
            return False
        self._by_start[start] = Mapping(start, length, dsn, data_len, checksum, data_fin)
        return True

    def set_infinite(self, offset: int, dsn: int) -> None:
        """Map every byte from `offset` on to `dsn` onwards; drop anything held below it."""
        self.infinite_base = (offset, dsn)
        self.blocked = False
        self._by_start.clear()
        if offset > self.pending_offset:
            drop = min(offset - self.pending_offset, len(self.pending))
            del self.pending[:drop]
            self.pending_offset += drop
            if self.pending_offset < offset:
                self.pending_offset = offset

    def feed(self, offset: int, data: bytes) -> MappingOutcome:
        """Take in-order subflow bytes starting at `offset` and map what can be mapped."""
        expected = self.pending_offset + len(self.pending)
        if offset < expected:  # bytes below an infinite-mapping base were dropped
            if offset + len(data) <= expected:
                return MappingOutcome([])
            data = data[expected - offset:]
            offset = expected
        if not self.pending and not self.blocked:
            fast = self._fast_path(offset, data)
            if fast is not None:
                return fast
        self.pending += data
        return self.process()

    def _fast_path(self, offset: int, data: bytes) -> MappingOutcome | None:
        base = self.infinite_base
        if base is not None:
            self.pending_offset = offset + len(data)
            if offset < base[0]:
                return MappingOutcome([])
            return MappingOutcome([(base[1] + offset - base[0], data)])
        if self.checksum:
            return None
        mapping = self._by_start.get(offset)
        if mapping is None:
            return None
        mapping_end = mapping.start + mapping.length
        data_end = offset + len(data)
        if data_end > mapping_end:
            return None
        self.pending_offset = data_end
        outcome = MappingOutcome([(mapping.dsn, data)])
        if data_end >= mapping_end:
            del self._by_start[mapping.start]
            if mapping.data_fin:
                outcome.data_fin_dsn = mapping.dsn + mapping.length
        else:
            # keep the remainder reachable by its new start
            del self._by_start[mapping.start]
            moved = len(data)
            self._by_start[mapping.start + moved] = Mapping(
                mapping.start + moved, mapping.length - moved, mapping.dsn + moved,
                mapping.data_len, mapping.checksum, mapping.data_fin)
        return outcome

    def _covering_fast(self, offset: int) -> Mapping | None:
        return self._by_start.get(offset)

    def _covering(self, offset: int) -> Mapping | None:
        mapping = self._by_start.get(offset)
        if mapping is not None:
            return mapping
        for candidate in self._by_start.values():
            if candidate.start <= offset < candidate.end or (
                    candidate.length == 0 and candidate.start == offset):
                return candidate
        return None

    def process(self) -> MappingOutcome:
        """Deliver whatever the held bytes and known mappings allow."""
        outcome = MappingOutcome([])
        if self.blocked:
            return outcome
        base = self.infinite_base
        if base is not None:
            if self.pending:
                if self.pending_offset >= base[0]:
                    outcome.delivered.append(
                        (base[1] + self.pending_offset - base[0], bytes(self.pending)))
                self.pending_offset += len(self.pending)
                self.pending.clear()
            return outcome
        while self.pending:
            mapping = self._covering(self.pending_offset)
            if mapping is None:
                # in-order bytes whose segments carried no mapping (a mapping rides on the
                # segment it covers or an earlier one): options were stripped
                outcome.unmapped = True
                return outcome
            skip = self.pending_offset - mapping.start
            available = len(self.pending)
            if self.checksum:
                if skip or available < mapping.length:
                    return outcome  # wait for the whole mapping
                payload = bytes(self.pending[:mapping.length])
                expected = dss_checksum(mapping.dsn, mapping.start & MASK32, mapping.data_len,
                                        payload)
                if mapping.checksum is not None and expected != mapping.checksum:
                    outcome.checksum_failed = mapping
                    self.blocked = True
                    return outcome
                take = mapping.length
            else:
                take = min(available, mapping.length - skip)
                payload = bytes(self.pending[:take])
            outcome.delivered.append((mapping.dsn + skip, payload))
            del self.pending[:take]
            self.pending_offset += take
            if self.pending_offset >= mapping.end:
                del self._by_start[mapping.start]
                if mapping.data_fin:
                    outcome.data_fin_dsn = mapping.dsn + mapping.length
        return outcome
