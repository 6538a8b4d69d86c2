"""The download engine (gmbench/utils/download.py) against a local HTTP server: resume after
a dropped connection, a server that ignores Range, checksum mismatch (nothing left behind,
the serving mirror named), mirrors, --from folders, the disk check, offline mode, proxies
from the environment, and unpacking."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile

import pytest

from gmbench.utils import download as dl
from gmbench.utils.download import Checksum, DownloadError, fetch_file, mirror_urls, unpack

try:
    from http_fixture import FileServer
except ImportError:  # tests/ imported as a package
    from tests.http_fixture import FileServer

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


def sha(data: bytes) -> Checksum:
    return Checksum("sha256", hashlib.sha256(data).hexdigest())


@pytest.fixture(autouse=True)
def _no_proxy_no_offline(monkeypatch):
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
              "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.delenv(dl.OFFLINE_ENV, raising=False)


@pytest.fixture
def server():
    with FileServer({"/f.bin": PAYLOAD}) as s:
        yield s


def test_checksum_text_round_trips_and_prefix_matches_only_the_start():
    c = Checksum.parse("sha256-prefix:63fe2227")
    assert c.prefix and str(c) == "sha256-prefix:63fe2227"
    assert c.matches("63fe2227" + "0" * 56) and not c.matches("0" * 64)
    assert not Checksum.parse("md5:ab").matches("abc")  # a full digest must be equal
    for bad in ("crc32:00", "sha256:", "md5:xyz", "63fe2227"):
        with pytest.raises(ValueError, match="checksum"):
            Checksum.parse(bad)


def test_a_dropped_download_resumes_with_range_and_verifies(server, tmp_path):
    dest = tmp_path / "f.bin"
    server.drop("/f.bin", 3000)
    with pytest.raises(DownloadError, match="kept for the next attempt"):
        fetch_file(dest, [server.url("/f.bin")], len(PAYLOAD), sha(PAYLOAD), retries=0,
                   progress=False, log=lambda m: None)
    part = tmp_path / "f.bin.part"
    assert not dest.exists() and part.stat().st_size == 3000  # never taken for the whole file
    fetch_file(dest, [server.url("/f.bin")], len(PAYLOAD), sha(PAYLOAD), retries=0,
               progress=False)
    assert server.log[-1] == ("/f.bin", "bytes=3000-")
    assert dest.read_bytes() == PAYLOAD
    assert sorted(os.listdir(tmp_path)) == ["f.bin"]  # no .part, no .from left


def test_a_connection_dropped_mid_call_is_resumed_by_the_retry(server, tmp_path):
    server.drop("/f.bin", 5000)
    out = fetch_file(tmp_path / "f.bin", [server.url("/f.bin")], len(PAYLOAD), sha(PAYLOAD),
                     retries=1, progress=False, log=lambda m: None)
    assert out.read_bytes() == PAYLOAD
    assert [r for _, r in server.log] == [None, "bytes=5000-"]


def test_a_server_that_ignores_range_restarts_instead_of_appending(server, tmp_path):
    server.ignore_ranges()
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:4000])
    out = fetch_file(tmp_path / "f.bin", [server.url("/f.bin")], len(PAYLOAD), sha(PAYLOAD),
                     progress=False)
    assert out.read_bytes() == PAYLOAD  # 200 after a Range request: the part starts again


def test_a_tampered_file_is_deleted_and_the_mirror_that_served_it_named(server, tmp_path):
    bad = bytearray(PAYLOAD)
    bad[777] ^= 0xFF
    server.files["/mirror/f.bin"] = bytes(bad)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as e:
        fetch_file(dest, [server.url("/mirror/f.bin")], len(PAYLOAD), sha(PAYLOAD),
                   progress=False)
    msg = str(e.value)
    assert server.url("/mirror/f.bin") in msg and "does not verify" in msg
    assert hashlib.sha256(bytes(bad)).hexdigest() in msg and "deleted" in msg
    assert os.listdir(tmp_path) == []  # nothing left behind
    # the same bad mirror first, then the good official URL: the good copy is kept
    urls = mirror_urls(server.url("/f.bin"), [server.url("/mirror")])
    assert urls == [server.url("/mirror/f.bin"), server.url("/f.bin")]
    assert fetch_file(dest, urls, len(PAYLOAD), sha(PAYLOAD), progress=False).read_bytes() == PAYLOAD


def test_a_missing_mirror_file_falls_back_to_the_next_url(server, tmp_path):
    out = fetch_file(tmp_path / "f.bin", [server.url("/nowhere/f.bin"), server.url("/f.bin")],
                     len(PAYLOAD), sha(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD and server.log[0][0] == "/nowhere/f.bin"


def test_from_folder_copies_are_verified_and_need_no_network(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    (good / "f.bin").write_bytes(PAYLOAD)
    (bad / "f.bin").write_bytes(PAYLOAD[:-1])
    dest = tmp_path / "out" / "f.bin"
    unreachable = ["http://127.0.0.1:9/f.bin"]  # discard port: any request would fail
    with pytest.raises(DownloadError, match=r"bad/f.bin .*not the published f.bin: it has 10239 bytes"):
        fetch_file(dest, unreachable, len(PAYLOAD), sha(PAYLOAD), from_dirs=[bad], progress=False)
    assert not dest.exists() and os.listdir(dest.parent) == []
    fetch_file(dest, unreachable, len(PAYLOAD), sha(PAYLOAD), from_dirs=[good], progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_the_disk_check_refuses_before_any_request(server, tmp_path, monkeypatch):
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(DownloadError, match=r"needs 10.2 KB, 1.0 KB free"):
        fetch_file(tmp_path / "f.bin", [server.url("/f.bin")], len(PAYLOAD), sha(PAYLOAD),
                   progress=False)
    assert server.log == []


def test_offline_mode_never_requests(server, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.OFFLINE_ENV, "1")
    with pytest.raises(DownloadError, match="GMBENCH_OFFLINE=1 forbids"):
        fetch_file(tmp_path / "f.bin", [server.url("/f.bin")], len(PAYLOAD), sha(PAYLOAD),
                   progress=False)
    assert server.log == [] and not (tmp_path / "f.bin").exists()


def test_a_proxy_from_the_environment_is_used(server, tmp_path, monkeypatch):
    monkeypatch.setenv("http_proxy", server.base)  # the test server plays the proxy
    url = "http://official-host.invalid/f.bin"
    out = fetch_file(tmp_path / "f.bin", [url], len(PAYLOAD), sha(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD and server.log == [(url, None)]


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_unpack_merges_into_the_folder_and_refuses_escaping_members(tmp_path):
    arc = tmp_path / "a.tar"
    arc.write_bytes(_tar({"d/x.txt": b"x", "d/sub/y.txt": b"y"}))
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "old.txt").write_text("kept")
    written = unpack(arc, root, last=("d/x.txt",))
    assert written[-1] == root / "d" / "x.txt"  # the marker member is moved last
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.txt")) == \
        ["d/old.txt", "d/sub/y.txt", "d/x.txt"]
    assert [p.name for p in root.iterdir()] == ["d"]  # no staging folder left
    evil = tmp_path / "evil.tar"
    evil.write_bytes(_tar({"../escaped.txt": b"!"}))
    with pytest.raises(DownloadError, match="outside the target folder"):
        unpack(evil, root)
    assert not (tmp_path / "escaped.txt").exists()


def test_unpack_pick_takes_one_zip_member_to_its_target(tmp_path):
    arc = tmp_path / "g.zip"
    with zipfile.ZipFile(arc, "w") as z:
        z.writestr("glove.6B.50d.txt", "a 1\n")
        z.writestr("glove.6B.300d.txt", "b 2\n")
    target = tmp_path / "glove" / "glove.6B.300d.txt"
    unpack(arc, target.parent, pick={"glove.6B.300d.txt": target})
    assert target.read_text() == "b 2\n" and os.listdir(target.parent) == ["glove.6B.300d.txt"]
