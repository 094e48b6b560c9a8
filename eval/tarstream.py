"""A fast streaming reader of the factory's tar shards.

Python's ``tarfile`` (which webdataset's ``tar_file_expander`` uses) parses
every header field and every PAX record in Python; on 112x112 JPEG shards
(three members per sample) that cost three times as much CPU as decoding the
JPEGs (docs/benchmark.md). This reader takes from a header only what a
sample needs (name, size, type; PAX ``path`` / ``size`` and GNU long names),
checks the checksum of headers without the ustar magic, and hands out
payloads from one reused read buffer, copying out only the members asked
for. Compressed shards go to webdataset's reader. The output,
:func:`iter_samples`, is (key, payloads) tuples per sample, grouped as
webdataset's ``group_by_keys`` groups them (the training reader).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

from webdataset.tariterators import tar_file_expander

from synthface.errors import InputDataError

_BLOCK = 512
_META = re.compile(rb"__[^/]*__($|/)")  # webdataset skips these member names
_REGULAR = (b"0", b"\0", b"7")
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")
# Names are bytes in a tar; tarfile (webdataset's reader) decodes them as UTF-8 with
# surrogate escapes, so a name in another encoding is read, not an error: so do we.
_NAME_ERRORS = "surrogateescape"


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for large sizes
        return int.from_bytes(field[1:], "big")
    field = field.split(b"\0", 1)[0].strip()
    return int(field, 8) if field else 0


def _pax(data: bytes) -> dict[str, str]:
    """The ``path`` and ``size`` records of a PAX header (the only ones a sample needs)."""
    out, pos = {}, 0
    if b"path=" not in data and b"size=" not in data:
        return out  # mtime, uid... only: nothing to parse
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        if key in (b"path", b"size"):
            out[key.decode("utf-8")] = value.decode("utf-8", _NAME_ERRORS)
        pos += length
    return out


_HEADER = struct.Struct("100s24x12s20x1s100x5s")  # name, size, type, magic
_CHUNK = 1 << 20


def _checksum_ok(header: bytes) -> bool:
    return _number(header[148:156]) == sum(header[:148]) + 256 + sum(header[156:])


class _Window:
    """A stream read into one reused buffer: ``buf[pos:end]`` holds the bytes not yet consumed.

    Reading into the same bytearray, instead of a new bytes object per read,
    matters on VMs where every fresh page costs a fault (a 1 MiB read is 256
    of them).
    """

    def __init__(self, stream, size: int):
        self.stream = stream
        self.readinto = getattr(stream, "readinto", None)
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.pos = self.end = 0

    def fill(self, need: int) -> bool:
        """Make at least ``need`` unread bytes available; False at the end of the stream."""
        left = self.end - self.pos
        if need > len(self.buf):  # a member larger than the buffer
            self.view.release()
            self.buf = self.buf[self.pos : self.end] + bytearray(need - left)
            self.view = memoryview(self.buf)
        else:
            self.view[:left] = self.view[self.pos : self.end]
        self.pos, self.end = 0, left
        while self.end < need:
            if self.readinto is not None:
                got = self.readinto(self.view[self.end :])
            else:
                data = self.stream.read(len(self.buf) - self.end)
                got = len(data)
                self.view[self.end : self.end + got] = data
            if not got:
                return False
            self.end += got
        return True


def _compressed(window: _Window) -> bool:
    window.fill(_BLOCK)
    return bytes(window.view[: window.end][:5]).startswith(_COMPRESSED)


def _key_and_index(name: bytes, want: dict[bytes, int]) -> tuple[bytes, int] | None:
    """(key, index of the wanted extension or -1) of a member name, as webdataset's
    ``group_by_keys`` splits it (key: the path up to the first dot of the file name;
    extension: the rest, lower-cased); None for names it skips (meta members, no dot)."""
    if name[:2] == b"__" and _META.match(name):
        return None
    stem_at = name.rfind(b"/") + 1
    dot = name.find(b".", stem_at)
    if dot <= stem_at:
        return None
    return name[:dot], want.get(name[dot + 1 :].lower(), -1)


def _scan(window: _Window, url: str, want: dict[bytes, int]) -> Iterator[tuple[bytes, int, bytes | None]]:
    """(key, index, payload) per regular member of the tar in ``window`` that has a key (see
    :func:`_key_and_index`); the payload is copied out only for a wanted extension (index >= 0).

    The stream is read in 1 MiB chunks into one buffer and each header is parsed in place
    by one struct call; a plain ustar member (what the factory and Python's tarfile write)
    takes the short path. This loop runs three times per training image."""
    long_name: bytes | None = None
    pax: dict[str, str] | None = None  # PAX records for the next member
    unpack = _HEADER.unpack_from
    buf, view, pos, end = window.buf, window.view, window.pos, window.end
    while True:
        if pos + _BLOCK > end:
            window.pos = pos
            if not window.fill(_BLOCK):
                if window.end == 0:
                    return  # a stream that ends between members
                raise InputDataError(f"shard {url}: truncated tar header")
            buf, view, pos, end = window.buf, window.view, 0, window.end
        raw_name, raw_size, kind, magic = unpack(buf, pos)
        plain = kind == b"0" and magic == b"ustar" and pax is None and long_name is None and not buf[pos + 345]
        if plain:
            try:
                size = int(raw_size.rstrip(b"\0"), 8)
            except ValueError:  # base-256, or an odd terminator
                size = _number(raw_size)
        else:
            if raw_name[:1] == b"\0" and buf.count(0, pos, pos + _BLOCK) == _BLOCK:
                return  # end-of-archive blocks
            # ustar/pax headers (what webdataset and tarfile write) carry a magic;
            # others get the full checksum test
            if magic != b"ustar" and not _checksum_ok(bytes(view[pos : pos + _BLOCK])):
                raise InputDataError(f"shard {url}: corrupt tar header (checksum mismatch)")
            size = _number(raw_size)
            if pax and kind in _REGULAR and "size" in pax:
                size = int(pax["size"])
        header_at = pos
        stop = pos + _BLOCK + size + (-size % _BLOCK)
        if stop > end:  # the member runs past the buffered bytes: read on
            window.pos = pos
            if not window.fill(stop - pos):
                raise InputDataError(f"shard {url}: truncated tar member")
            buf, view, pos, end = window.buf, window.view, 0, window.end
            header_at, stop = 0, stop - header_at
        start = header_at + _BLOCK
        pos = stop
        if plain:
            name = raw_name.partition(b"\0")[0]
        else:
            if kind == b"x":
                # records that change nothing (mtime, uid... as webdataset's TarWriter writes)
                # leave the next member on the short path
                pax = _pax(bytes(view[start : start + size])) or None
                continue
            if kind == b"L":
                long_name = bytes(view[start : start + size]).rstrip(b"\0")
                continue
            # global header, dirs, links (and GNU long link names), devices, a GNU volume label
            if kind in (b"g", b"5", b"1", b"2", b"3", b"4", b"6", b"K", b"V"):
                pax = long_name = None
                continue
            if kind not in _REGULAR:
                raise InputDataError(f"shard {url}: unsupported tar member type {kind!r} (sparse file?)")
            name = pax["path"].encode("utf-8", _NAME_ERRORS) if pax and "path" in pax else long_name
            if name is None:
                name = raw_name.partition(b"\0")[0]
                if magic == b"ustar" and buf[header_at + 345]:  # a ustar name prefix
                    name = bytes(view[header_at + 345 : header_at + 500]).partition(b"\0")[0] + b"/" + name
            pax = long_name = None
        split = _key_and_index(name, want)
        if split is not None:
            yield split[0], split[1], bytes(view[start : start + size]) if split[1] >= 0 else None


def _compressed_members(stream, url: str, want: dict[bytes, int]) -> Iterator[tuple[bytes, int, bytes | None]]:
    """What :func:`_scan` gives, from a compressed shard through webdataset's tarfile reader."""
    try:
        stream.seek(0)
    except (OSError, AttributeError):
        raise InputDataError(f"shard {url}: compressed or unusual tar that cannot be re-read from the start") from None
    for member in tar_file_expander([{"url": url, "stream": stream}]):
        if member:
            split = _key_and_index(member["fname"].encode("utf-8", _NAME_ERRORS), want)
            if split is not None:
                yield split[0], split[1], member["data"] if split[1] >= 0 else None


def iter_samples(stream, url: str, suffixes: tuple[str, ...]) -> Iterator[tuple[str, tuple[bytes | None, ...]]]:
    """(key, payloads) per sample of a shard: ``payloads[i]`` is the member with extension
    ``suffixes[i]``, or None where the sample lacks it.

    Keys and extensions split as webdataset's ``group_by_keys`` splits them (key: the path
    up to the first dot of the file name; extension: the rest, lower-cased; members without
    a dot are skipped), and consecutive members with the same key form a sample, as there;
    a sample with none of the wanted members is dropped. Tuples instead of dicts: the
    training reader runs this once per image.
    """
    want = {s.lower().encode("utf-8"): i for i, s in enumerate(suffixes)}
    window = _Window(stream, _CHUNK)
    members = _compressed_members(stream, url, want) if _compressed(window) else _scan(window, url, want)
    key, found, empty = None, None, [None] * len(suffixes)
    for member_key, index, payload in members:
        if member_key != key:
            if found is not None and found != empty:
                yield key.decode("utf-8", _NAME_ERRORS), tuple(found)
            key, found = member_key, [None] * len(suffixes)
        if index >= 0:
            if found[index] is not None:
                raise InputDataError(f"shard {url}: duplicate member {key.decode('utf-8', _NAME_ERRORS)}.{suffixes[index]}")
            found[index] = payload
    if found is not None and found != empty:
        yield key.decode("utf-8", _NAME_ERRORS), tuple(found)
