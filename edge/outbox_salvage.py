"""Records of a damaged SQLite file, read page by page without SQLite (pure: bytes in, records out).

SQLite refuses every query on a file it finds malformed: cut short, overwritten in the middle, or with
a damaged header. The rows are still there, in the table b-tree's leaf pages. This module reads them
the way the file format documents them (https://www.sqlite.org/fileformat2.html): every page that is
a table leaf (type 0x0D) gives its cells; a cell is a rowid and a record (a header of serial types,
then the values); a payload too large for its page continues in a chain of overflow pages. Pages
written in the write-ahead log and not yet copied back win over the main file's copy, frame by frame
up to the last commit whose salts and checksums hold (§4.3 of the format).

Nothing here knows the outbox's schema: `scan_records` yields every readable (rowid, values) and the
outbox decides which look like its rows and whether their checksums hold. A cell that cannot be read
(bad varints, a record running off its page, a broken overflow chain) is counted, not guessed at.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

HEADER_MAGIC = b"SQLite format 3\x00"
TABLE_LEAF = 0x0D
WAL_MAGIC = (0x377F0682, 0x377F0683)
_FALLBACK_PAGE_SIZES = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)


@dataclass
class ScanResult:
    """Readable records (rowid, values) of every table-leaf page, and how many cells could not be read."""

    records: list[tuple[int, list]] = field(default_factory=list)
    unreadable_cells: int = 0
    pages: int = 0
    wal_pages: int = 0
    page_size: int = 0


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """SQLite's big-endian varint at `pos`: (value, next position); IndexError past the end."""
    value = 0
    for i in range(8):
        byte = buf[pos + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    return (value << 8) | buf[pos + 8], pos + 9


def _serial_size(serial: int) -> int:
    if serial < 12:
        return (0, 1, 2, 3, 4, 6, 8, 8, 0, 0, -1, -1)[serial]
    return (serial - 12) // 2 if serial % 2 == 0 else (serial - 13) // 2


def decode_record(payload: bytes) -> list:
    """The values of one record (ints, floats, bytes, str, None); ValueError when it is not well formed."""
    try:
        header_size, pos = _varint(payload, 0)
        serials = []
        while pos < header_size:
            serial, pos = _varint(payload, pos)
            serials.append(serial)
    except IndexError as exc:
        raise ValueError("record header runs off its payload") from exc
    if pos != header_size or header_size > len(payload):
        raise ValueError("record header size does not match its serial types")
    values: list = []
    body = header_size
    for serial in serials:
        size = _serial_size(serial)
        if size < 0:
            raise ValueError(f"reserved serial type {serial}")
        chunk = payload[body:body + size]
        if len(chunk) != size:
            raise ValueError("record body runs off its payload")
        body += size
        if serial == 0:
            values.append(None)
        elif serial <= 6:
            values.append(int.from_bytes(chunk, "big", signed=True))
        elif serial == 7:
            values.append(struct.unpack(">d", chunk)[0])
        elif serial in (8, 9):
            values.append(serial - 8)
        elif serial % 2 == 0:
            values.append(bytes(chunk))
        else:
            values.append(chunk.decode("utf-8"))  # UnicodeDecodeError is a ValueError
    if body != len(payload):
        raise ValueError("record body is longer than its serial types say")
    return values


def _page_size_of(db: bytes, wal: bytes | None) -> list[int]:
    """Candidate page sizes: the database header's, else the WAL header's, else the common ones."""
    sizes = []
    if db.startswith(HEADER_MAGIC) and len(db) >= 100:
        raw = int.from_bytes(db[16:18], "big")
        size = 65536 if raw == 1 else raw
        if size >= 512 and size & (size - 1) == 0:
            sizes.append(size)
    if wal is not None and len(wal) >= 32 and int.from_bytes(wal[0:4], "big") in WAL_MAGIC:
        size = int.from_bytes(wal[8:12], "big")
        if size >= 512 and size & (size - 1) == 0 and size not in sizes:
            sizes.append(size)
    return sizes or list(_FALLBACK_PAGE_SIZES)


def _wal_checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    """The WAL's running checksum over `data` (a multiple of 8 bytes), §4.3 of the file format."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def wal_pages(wal: bytes, page_size: int) -> dict[int, bytes]:
    """Page number -> newest committed content in a WAL file (frames with the header's salts and an
    unbroken checksum chain, up to the last commit frame); {} for a missing or foreign WAL."""
    if len(wal) < 32:
        return {}
    magic = int.from_bytes(wal[0:4], "big")
    if magic not in WAL_MAGIC or int.from_bytes(wal[8:12], "big") != page_size:
        return {}
    big_endian = magic & 1 == 1
    salts = wal[16:24]
    s0, s1 = _wal_checksum(wal[:24], 0, 0, big_endian)
    if (s0, s1) != struct.unpack(">II", wal[24:32]):
        return {}
    committed: dict[int, bytes] = {}
    pending: dict[int, bytes] = {}
    pos = 32
    while pos + 24 + page_size <= len(wal):
        header, page = wal[pos:pos + 24], wal[pos + 24:pos + 24 + page_size]
        if header[8:16] != salts:
            break
        s0, s1 = _wal_checksum(header[:8] + page, s0, s1, big_endian)
        if (s0, s1) != struct.unpack(">II", header[16:24]):
            break
        page_no, db_size = struct.unpack(">II", header[:8])
        pending[page_no] = page
        if db_size:  # a commit frame: everything up to here is one committed transaction
            committed.update(pending)
            pending.clear()
        pos += 24 + page_size
    return committed


def _overflow(pages: dict[int, bytes], first: int, needed: int, usable: int) -> bytes:
    """`needed` bytes from the overflow chain starting at page `first`; ValueError on a broken chain."""
    out = bytearray()
    seen: set[int] = set()
    page_no = first
    while len(out) < needed:
        page = pages.get(page_no)
        if page is None or page_no in seen or len(page) < usable:
            raise ValueError(f"overflow page {page_no} is missing or damaged")
        seen.add(page_no)
        out += page[4:usable][:needed - len(out)]
        page_no = int.from_bytes(page[0:4], "big")
    return bytes(out)


def _leaf_cells(pages: dict[int, bytes], page_no: int, usable: int, result: ScanResult) -> None:
    page = pages[page_no]
    start = 100 if page_no == 1 else 0
    if len(page) < start + 8 or page[start] != TABLE_LEAF:
        return
    n_cells = int.from_bytes(page[start + 3:start + 5], "big")
    max_local = usable - 35
    min_local = (usable - 12) * 32 // 255 - 23
    for i in range(n_cells):
        ptr_at = start + 8 + 2 * i
        try:
            offset = int.from_bytes(page[ptr_at:ptr_at + 2], "big")
            if len(page[ptr_at:ptr_at + 2]) != 2 or not start + 8 <= offset < usable:
                raise ValueError("cell pointer outside its page")
            size, pos = _varint(page, offset)
            rowid, pos = _varint(page, pos)
            if size <= max_local:
                payload = page[pos:pos + size]
                if len(payload) != size:
                    raise ValueError("cell runs off its page")
            else:
                local = min_local + (size - min_local) % (usable - 4)
                local = local if local <= max_local else min_local
                head = page[pos:pos + local]
                link = page[pos + local:pos + local + 4]
                if len(head) != local or len(link) != 4:
                    raise ValueError("cell runs off its page")
                payload = head + _overflow(pages, int.from_bytes(link, "big"), size - local, usable)
            result.records.append((rowid, decode_record(payload)))
        except (ValueError, IndexError):
            result.unreadable_cells += 1


def scan_records(db: bytes, wal: bytes | None = None) -> ScanResult:
    """Every readable table-leaf record of a (possibly damaged or truncated) SQLite file and its WAL.

    The page size comes from the file's header, else its WAL's, else the candidate that yields the
    most records. A page cut short by truncation still gives the cells that lie in what is left.
    """
    best = ScanResult()
    for page_size in _page_size_of(db, wal):
        usable = page_size - (db[20] if db.startswith(HEADER_MAGIC) and len(db) > 20 else 0)
        pages = {i // page_size + 1: db[i:i + page_size] for i in range(0, len(db), page_size)}
        from_wal = wal_pages(wal, page_size) if wal else {}
        pages.update(from_wal)
        result = ScanResult(pages=len(pages), wal_pages=len(from_wal), page_size=page_size)
        for page_no in sorted(pages):
            _leaf_cells(pages, page_no, usable, result)
        if len(result.records) > len(best.records) or not best.page_size:
            best = result
    return best
