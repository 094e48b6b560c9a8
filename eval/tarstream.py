"""A fast streaming reader of the factory's tar shards.

Python's ``tarfile`` (which webdataset's ``tar_file_expander`` uses) parses
every header field and every PAX record in Python; on 112x112 JPEG shards
(three members per sample, each behind a PAX header) that cost three times as
much CPU as decoding the JPEGs (docs/benchmark.md). This reader takes from a
header only what a sample needs (name, size, type; PAX ``path`` / ``size``
and GNU long names), checks the header checksum, and reads the payload in one
call. Anything it does not handle (compressed shards) goes to
webdataset's reader, so the output is the same as ``tar_file_expander``'s:
``{"fname", "data", "__url__"}`` per regular member, ``{}`` at the end of
each shard.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from webdataset.tariterators import tar_file_expander

from synthface.errors import InputDataError

_BLOCK = 512
_META = re.compile(r"__[^/]*__($|/)")  # webdataset skips these member names
_REGULAR = (b"0", b"\0", b"7")
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")


class _Fallback(Exception):
    """A compressed shard: webdataset's reader (tarfile) handles it."""


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
            out[key.decode("utf-8")] = value.decode("utf-8")
        pos += length
    return out


class _Buffered:
    """Reads a stream in large chunks and hands out exact byte counts (fewer read calls)."""

    def __init__(self, stream, chunk: int = 1 << 20):
        self.stream, self.chunk = stream, chunk
        self.buf, self.pos = b"", 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            more = self.stream.read(max(self.chunk, n))
            self.buf = self.buf[self.pos :] + more
            self.pos, end = 0, n
        out = self.buf[self.pos : end]
        self.pos = end
        return out


def iter_members(stream, url: str = "") -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular member of an uncompressed tar stream, in order."""
    long_name: str | None = None
    pax: dict[str, str] = {}
    reader = _Buffered(stream)
    first = True
    while True:
        header = reader.take(_BLOCK)
        if first and header.startswith(_COMPRESSED):
            raise _Fallback
        first = False
        if not header or (len(header) == _BLOCK and header[0] == 0 and header.count(0) == _BLOCK):
            return  # end-of-archive blocks (or a stream that ends between members)
        if len(header) < _BLOCK:
            raise InputDataError(f"shard {url}: truncated tar header")
        # ustar/pax headers (what webdataset and tarfile write) carry a magic;
        # others get the full checksum test
        if header[257:262] != b"ustar" and _number(header[148:156]) != sum(header[:148]) + 256 + sum(header[156:]):
            raise InputDataError(f"shard {url}: corrupt tar header (checksum mismatch)")
        kind = header[156:157]
        size = _number(header[124:136])
        if kind in _REGULAR and "size" in pax:
            size = int(pax["size"])
        data = reader.take(size)
        if len(data) < size:
            raise InputDataError(f"shard {url}: truncated tar member")
        pad = -size % _BLOCK
        if pad and len(reader.take(pad)) < pad:
            raise InputDataError(f"shard {url}: truncated tar member")
        if kind == b"x":
            pax = _pax(data)
            continue
        if kind == b"L":
            long_name = data.rstrip(b"\0").decode("utf-8")
            continue
        if kind in (b"g", b"5", b"1", b"2", b"3", b"4", b"6"):  # global header, dirs, links, devices
            pax, long_name = {}, None
            continue
        if kind not in _REGULAR:
            raise InputDataError(f"shard {url}: unsupported tar member type {kind!r} (sparse file?)")
        name = pax.get("path") or long_name
        if name is None:
            name = header[:100].split(b"\0", 1)[0].decode("utf-8")
            if header[257:262] == b"ustar":
                prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8")
                if prefix:
                    name = prefix + "/" + name
        pax, long_name = {}, None
        yield name, data


def fast_tar_expander(data: Iterable[dict], suffixes: tuple[str, ...] | None = None) -> Iterator[dict]:
    """Drop-in for webdataset's ``tar_file_expander`` on {"url", "stream"} dicts.

    ``suffixes``: keep only members whose extension is one of these (the
    reader needs ``jpg`` and ``cls``, not the per-sample ``json``).
    """
    for source in data:
        url, stream = source["url"], source["stream"]
        try:
            for name, payload in iter_members(stream, url):
                if _META.match(name):
                    continue
                if suffixes is not None and name.rpartition(".")[2].lower() not in suffixes:
                    continue
                yield {"fname": name, "data": payload, "__url__": url}
        except _Fallback:
            reopened = dict(source)
            try:
                stream.seek(0)
            except (OSError, AttributeError):
                raise InputDataError(f"shard {url}: compressed or unusual tar that cannot be re-read from the start") from None
            yield from tar_file_expander([reopened])  # ends the shard with its own {}
            continue
        yield {}
