"""The fast tar reader gives what webdataset's tarfile-based reader gives."""

from __future__ import annotations

import io
import tarfile

import pytest
from webdataset.tariterators import tar_file_expander

from eval.tarstream import fast_tar_expander
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


def _both(data: bytes, url="mem.tar"):
    ours = list(fast_tar_expander([{"url": url, "stream": io.BytesIO(data)}]))
    theirs = list(tar_file_expander([{"url": url, "stream": io.BytesIO(data)}]))
    return ours, theirs


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_same_members_as_webdataset(fmt):
    members = MEMBERS if fmt != tarfile.USTAR_FORMAT else [m for m in MEMBERS if len(m[0]) < 100]
    ours, theirs = _both(_tar(members, fmt))
    assert ours == theirs
    assert ours[-1] == {} and len(ours) == len(members)  # the meta member skipped, end-of-shard marker


def test_suffix_filter_and_compressed_fallback():
    data = _tar(MEMBERS)
    kept = list(fast_tar_expander([{"url": "a", "stream": io.BytesIO(data)}], suffixes=("jpg",)))
    assert [m["fname"].rsplit("/", 1)[-1] for m in kept if m] == ["0000001_000.jpg", "0000002_000.jpg"]
    gz = _tar(MEMBERS, mode="w:gz")
    ours, theirs = _both(gz)
    assert ours == theirs and len(ours) == len(MEMBERS)


def test_corrupt_or_truncated_shards_are_clear_errors():
    data = bytearray(_tar(MEMBERS, tarfile.GNU_FORMAT))
    data[257:262] = b"xxxxx"  # no ustar magic: the checksum is tested, and now fails
    with pytest.raises(InputDataError, match="checksum"):
        list(fast_tar_expander([{"url": "bad.tar", "stream": io.BytesIO(bytes(data))}]))
    cut = _tar(MEMBERS)[:1500]
    with pytest.raises(InputDataError, match="truncated"):
        list(fast_tar_expander([{"url": "cut.tar", "stream": io.BytesIO(cut)}]))
