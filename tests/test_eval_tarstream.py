"""The fast tar reader gives what webdataset's tarfile-based reader gives."""

from __future__ import annotations

import io
import tarfile

import pytest
from webdataset.tariterators import tar_file_expander

from eval.tarstream import iter_samples
from synthface.errors import InputDataError


def _tar(members, fmt=tarfile.PAX_FORMAT, mode="w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1.5  # a float mtime makes tarfile write a PAX header
            t.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("somedir")
        folder.type = tarfile.DIRTYPE
        t.addfile(folder)  # not a regular file: skipped by both
    return buf.getvalue()


MEMBERS = [
    ("0000001_000.jpg", b"\xff\xd8jpegbytes"),
    ("0000001_000.cls", b"1"),
    ("__meta__", b"skipped by both"),
    ("d" * 120 + "/0000002_000.jpg", b"x" * 1000),  # a long name: PAX path record
    ("0000003_000.json", b"{}" * 300),
    ("empty.cls", b""),
]


def _ours(data: bytes, suffixes=("jpg", "cls", "json"), url="mem.tar", wrap=io.BytesIO):
    return [(key, *payloads) for key, payloads in iter_samples(wrap(data), url, suffixes)]


def _webdatasets(data: bytes, suffixes=("jpg", "cls", "json"), url="mem.tar"):
    """The same samples through webdataset's own reader: tarfile members grouped by key."""
    from webdataset.tariterators import group_by_keys

    samples = group_by_keys(tar_file_expander([{"url": url, "stream": io.BytesIO(data)}]))
    return [(s["__key__"], *(s.get(x) for x in suffixes)) for s in samples if any(x in s for x in suffixes)]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_same_samples_as_webdataset_in_every_tar_format(fmt):
    members = MEMBERS if fmt != tarfile.USTAR_FORMAT else [m for m in MEMBERS if len(m[0]) < 100]
    data = _tar(members, fmt)
    ours = _ours(data)
    assert ours == _webdatasets(data)
    # the meta member skipped; a long name (PAX path or GNU long name) kept whole
    assert [key for key, *_ in ours] == list(dict.fromkeys(m[0].split(".")[0] for m in members if not m[0].startswith("__")))


def test_only_asked_for_members_and_compressed_shards():
    data = _tar(MEMBERS)
    assert [(key, jpg) for key, jpg in _ours(data, ("jpg",))] == [
        ("0000001_000", b"\xff\xd8jpegbytes"), ("d" * 120 + "/0000002_000", b"x" * 1000)]
    gz = _tar(MEMBERS, mode="w:gz")
    assert _ours(gz) == _webdatasets(gz) == _ours(data)


def test_corrupt_or_truncated_shards_are_clear_errors():
    data = bytearray(_tar(MEMBERS, tarfile.GNU_FORMAT))
    data[257:262] = b"xxxxx"  # no ustar magic: the checksum is tested, and now fails
    with pytest.raises(InputDataError, match="checksum"):
        _ours(bytes(data), url="bad.tar")
    cut = _tar(MEMBERS)[:1500]
    with pytest.raises(InputDataError, match="truncated"):
        _ours(cut, url="cut.tar")


def test_base_256_and_space_terminated_sizes():
    """Header number forms other writers use: GNU base-256 and a space-terminated octal field."""
    data = bytearray(_tar([("0000001_000.jpg", b"j" * 700), ("0000001_000.cls", b"7")], tarfile.USTAR_FORMAT))
    data[124:136] = b"\x80" + (700).to_bytes(11, "big")  # base-256
    data[512 * 3 + 124 : 512 * 3 + 136] = b"         1 \0"[:12]  # the second header: spaces around the digit
    assert _ours(bytes(data), ("jpg", "cls")) == [("0000001_000", b"j" * 700, b"7")]


class _ReadOnly:
    """A stream with read() only (no readinto), as some fsspec file objects are."""

    def __init__(self, data: bytes):
        self._f = io.BytesIO(data)

    def read(self, n=-1):
        return self._f.read(n)


GROUPED = [
    ("a/0000001_000.cls", b"1"),
    ("a/0000001_000.jpg", b"\xff\xd8one"),
    ("a/0000001_000.json", b"{}"),
    ("__meta__", b"skipped"),
    ("noextension", b"skipped"),
    ("b.x/0000002_000.JPG", b"\xff\xd8two" * 400),  # upper-case extension, dotted folder
    ("b.x/0000002_000.full.jpg", b"\xff\xd8full"),
    ("0000003_000.json", b"{}"),  # no wanted member: no sample
    ("0000004_000.cls", b"4"),  # no jpg: a sample with jpg None
]


@pytest.mark.parametrize("chunk", [1 << 20, 600])  # 600: refills mid-header and members longer than the buffer
@pytest.mark.parametrize("wrap", [io.BytesIO, _ReadOnly])
def test_samples_group_as_webdatasets_group_by_keys(monkeypatch, chunk, wrap):
    from webdataset.tariterators import group_by_keys

    monkeypatch.setattr("eval.tarstream._CHUNK", chunk)
    data = _tar(GROUPED, tarfile.USTAR_FORMAT)
    ours = [(key, jpg, cls) for key, (jpg, cls) in iter_samples(wrap(data), "mem.tar", ("jpg", "cls"))]
    theirs = [
        (s["__key__"], s.get("jpg"), s.get("cls"))
        for s in group_by_keys(tar_file_expander([{"url": "mem.tar", "stream": io.BytesIO(data)}]))
        if "jpg" in s or "cls" in s
    ]
    assert ours == theirs
    assert [key for key, _, _ in ours] == ["a/0000001_000", "b.x/0000002_000", "0000004_000"]


def test_a_member_twice_in_one_sample_is_an_error():
    data = _tar([("0000001_000.jpg", b"x"), ("0000001_000.jpg", b"y")], tarfile.USTAR_FORMAT)
    with pytest.raises(InputDataError, match="duplicate member 0000001_000.jpg"):
        list(iter_samples(io.BytesIO(data), "dup.tar", ("jpg", "cls")))


def test_link_members_with_gnu_long_link_names_are_skipped_like_links():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        link = tarfile.TarInfo("0000001_000.lnk")
        link.type, link.linkname = tarfile.SYMTYPE, "t" * 150  # a 'K' member carries the long target
        t.addfile(link)
        info = tarfile.TarInfo("0000002_000.jpg")
        info.size = 3
        t.addfile(info, io.BytesIO(b"jpg"))
    data = buf.getvalue()
    assert _ours(data) == _webdatasets(data) == [("0000002_000", b"jpg", None, None)]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_names_that_are_not_utf8_read_as_webdataset_reads_them(fmt):
    """A name in another encoding (the latin-1 byte 0xe9) is no crash: tarfile (webdataset's
    reader) decodes it as UTF-8 with surrogate escapes, and so do we (a PAX header carries
    it as raw bytes with hdrcharset=BINARY)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in [("caf\udce9_000.jpg", b"\xff\xd8a"), ("caf\udce9_000.cls", b"3"), ("ok_000.jpg", b"\xff\xd8b")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    assert b"caf\xe9_000.jpg" in data  # the raw latin-1 byte, not UTF-8
    ours = _ours(data, ("jpg", "cls"))
    assert ours == _webdatasets(data, ("jpg", "cls"))
    assert [key for key, *_ in ours] == ["caf\udce9_000", "ok_000"]
    gz = io.BytesIO()
    with tarfile.open(fileobj=gz, mode="w:gz", format=fmt) as t:
        info = tarfile.TarInfo("caf\udce9_000.jpg")
        info.size = 3
        t.addfile(info, io.BytesIO(b"\xff\xd8a"))
    assert _ours(gz.getvalue(), ("jpg",)) == [("caf\udce9_000", b"\xff\xd8a")]
