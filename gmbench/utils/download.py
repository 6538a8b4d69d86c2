"""Downloads a user can trust: resumable, atomic, verified, disk-checked, mirrored.

Library choice: torchvision's download utilities, not pooch. torchvision is already a
dependency and publishes the VOC md5 table this project cites; its ``extract_archive``
unpacks the verified tar and zip archives. Neither library resumes a download (both
restart from byte 0, which for COCO's 13 GB train2014.zip means starting over after any
dropped connection), and neither knows torch.hub's hash-prefix file names, so the HTTP
loop here is our own and adds only what they lack:

* **resume** with HTTP ``Range`` from ``DEST.part`` after Ctrl-C or a dropped connection
  (a server that ignores Range restarts the part from zero, never appends a second copy);
* **atomic**: bytes go to ``DEST.part``, which becomes ``DEST`` by ``os.replace`` only after
  its size and checksum verify, so a partial file is never taken for a whole one;
* **checksums** ``md5`` / ``sha1`` / ``sha256`` (or a sha256 *prefix*, torch.hub's naming);
  a mismatch deletes the part and names the mirror(s) that served its bytes;
* **free disk** checked before a download starts and before an archive is unpacked;
* **mirrors** tried in order (``--mirror`` bases first, then the official URL), and local
  folders of archives copied by hand (``--from``);
* **proxies** from the environment (``http_proxy``, ``https_proxy``, ``no_proxy``): urllib's
  default opener reads them.

``GMBENCH_OFFLINE=1`` forbids every download (``offline()``), for compute nodes.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, Iterable, List, Optional, Sequence

OFFLINE_ENV = "GMBENCH_OFFLINE"
PART = ".part"       # suffix of a download in progress
SOURCES = ".from"    # suffix of the side file naming the URLs that served the part's bytes
_TRANSIENT = (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException,
              TimeoutError)


class DownloadError(OSError):
    """A download or unpack that could not be completed; the message says what to do."""


def offline() -> bool:
    """True when ``GMBENCH_OFFLINE`` is set to anything but empty/0/false/no."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def human_size(n: Optional[float]) -> str:
    if n is None:
        return "unknown size"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"


@dataclass(frozen=True)
class Checksum:
    """A published digest: ``algo`` md5/sha1/sha256, ``value`` hex; ``prefix`` when only the
    start of the digest is known (torch.hub file names such as ``resnet101-63fe2227.pth``)."""
    algo: str
    value: str
    prefix: bool = False

    @classmethod
    def parse(cls, text: str) -> "Checksum":
        """``"md5:<hex>"``, ``"sha1:<hex>"``, ``"sha256:<hex>"`` or ``"sha256-prefix:<hex>"``."""
        algo, sep, value = text.partition(":")
        prefix = algo.endswith("-prefix")
        algo = algo[:-len("-prefix")] if prefix else algo
        if not sep or algo not in ("md5", "sha1", "sha256") or not value or \
                any(c not in "0123456789abcdef" for c in value.lower()):
            raise ValueError(f"checksum {text!r}: expected md5:/sha1:/sha256:/sha256-prefix: "
                             f"followed by hex digits")
        return cls(algo, value.lower(), prefix)

    def __str__(self) -> str:
        return f"{self.algo}{'-prefix' if self.prefix else ''}:{self.value}"

    def matches(self, digest: str) -> bool:
        return digest.startswith(self.value) if self.prefix else digest == self.value


def file_digest(path: Path, algo: str, chunk: int = 1 << 22) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def existing_ancestor(path: Path) -> Path:
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return p


def check_free(folder: Path, need: int, what: str) -> None:
    """DownloadError unless the file system holding ``folder`` has ``need`` bytes free."""
    where = existing_ancestor(folder)
    free = shutil.disk_usage(where).free
    if need > free:
        raise DownloadError(f"not enough free disk space under {where}: {what} needs "
                            f"{human_size(need)}, {human_size(free)} free. Free some space or "
                            f"choose another folder (--root), then run the command again")


def mirror_urls(url: str, mirrors: Sequence[str]) -> List[str]:
    """The URLs to try for ``url``: each mirror base + the file name, then the official one."""
    name = PurePosixPath(url.split("?", 1)[0]).name
    return [m.rstrip("/") + "/" + name for m in mirrors] + [url]


def _verify(path: Path, size: Optional[int], checksum: Optional[Checksum]) -> Optional[str]:
    """None when ``path`` has the expected size and checksum, else why not."""
    got = path.stat().st_size
    if size is not None and got != size:
        return f"it has {got} bytes, the published size is {size}"
    if checksum is not None:
        digest = file_digest(path, checksum.algo)
        if not checksum.matches(digest):
            return f"its {checksum.algo} is {digest}, the published one is {checksum}"
    return None


def _sources(part: Path) -> List[str]:
    side = part.with_name(part.name + SOURCES)
    return side.read_text().split() if side.is_file() else []


def _note_source(part: Path, url: str) -> None:
    known = _sources(part)
    if url not in known:
        with open(part.with_name(part.name + SOURCES), "a") as f:
            f.write(url + "\n")


def _discard(part: Path) -> None:
    for p in (part, part.with_name(part.name + SOURCES)):
        p.unlink(missing_ok=True)


def _http_into(part: Path, url: str, size: Optional[int], progress: bool, timeout: float,
               chunk: int, desc: str) -> None:
    """Append ``url``'s remaining bytes to ``part`` (Range from its current size).
    Raises a transient error when the connection ends before the file does."""
    from tqdm import tqdm
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have == size:
        return
    if size is not None and have > size:  # more bytes than the file has: not the same file
        _discard(part)
        have = 0
    req = urllib.request.Request(url, headers={"User-Agent": "gmbench-fetch"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        # a fresh opener: its ProxyHandler reads the environment's proxies now (urlopen's
        # global opener keeps those of its first call)
        resp = urllib.request.build_opener().open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after our bytes: the part may be whole already
            return
        raise
    with resp:
        status = getattr(resp, "status", 200)
        if have and status != 206:  # Range ignored: the body is the whole file again
            _discard(part)
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else size
        _note_source(part, url)
        with open(part, "ab") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=desc, disable=not progress,
                                         leave=False) as bar:
            while True:
                block = resp.read(chunk)
                if not block:
                    break
                f.write(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
    got = part.stat().st_size
    if total is not None and got < total:  # http.client returns b"" when a peer hangs up
        raise ConnectionError(f"connection closed after {got} of {total} bytes")


def fetch_file(dest: Path, urls: Sequence[str], size: Optional[int] = None,
               checksum: Optional[Checksum] = None, *, from_dirs: Iterable[Path] = (),
               retries: int = 3, progress: bool = True, timeout: float = 60.0,
               chunk: int = 1 << 20, log: Callable[[str], None] = print) -> Path:
    """Make ``dest`` a verified copy of the file at ``urls`` (tried in order) and return it.

    ``size`` (bytes, None if unknown) and ``checksum`` are the published values; a file
    already at ``dest`` that verifies is kept. ``from_dirs``: folders searched for a file of
    the same name first (copied, then verified). Each URL is retried ``retries`` times,
    resuming from ``dest.part``. Raises DownloadError (nothing unverified left at ``dest``).
    """
    dest = Path(dest)
    if dest.is_file():
        why = _verify(dest, size, checksum)
        if why is None:
            return dest
        log(f"{dest} is there but does not verify ({why}); fetching it again")
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART)
    for folder in from_dirs:
        local = Path(folder).expanduser() / dest.name
        if local.is_file():
            _discard(part)
            check_free(dest.parent, local.stat().st_size, f"copying {local}")
            shutil.copyfile(local, part)
            why = _verify(part, size, checksum)
            if why is not None:
                _discard(part)
                raise DownloadError(f"{local} (from --from {folder}) is not the published "
                                    f"{dest.name}: {why}. Nothing was copied; replace that file "
                                    f"or drop --from to download it")
            os.replace(part, dest)
            return dest
    if offline():
        raise DownloadError(f"{dest} is missing and {OFFLINE_ENV}=1 forbids downloading it "
                            f"(from {urls[-1]})")
    if size is not None:
        have = part.stat().st_size if part.exists() else 0
        check_free(dest.parent, max(0, size - have), f"downloading {dest.name}")
    failures: List[str] = []
    for url in urls:
        complete = False
        for attempt in range(retries + 1):
            try:
                _http_into(part, url, size, progress, timeout, chunk, dest.name)
                complete = True
                break
            except urllib.error.HTTPError as e:
                failures.append(f"{url}: HTTP {e.code} {e.reason}")
                break  # a 404/403 will not change on retry
            except _TRANSIENT as e:
                if attempt == retries:
                    kept = f"; {part} is kept for the next attempt to resume" \
                        if part.exists() else ""
                    failures.append(f"{url}: {e} (after {retries + 1} tries{kept})")
                else:
                    log(f"{dest.name}: {e}; resuming from byte "
                        f"{part.stat().st_size if part.exists() else 0}")
        if not complete:
            continue
        served = _sources(part) or [url]
        why = _verify(part, size, checksum)
        if why is None:
            os.replace(part, dest)
            _discard(part)
            return dest
        _discard(part)
        failures.append(f"{', '.join(served)} served a file that does not verify ({why}); "
                        f"it was deleted")
    raise DownloadError(f"could not fetch {dest.name}:\n  " + "\n  ".join(failures) +
                        "\nTry again later, give another --mirror URL, or copy the file by hand "
                        "into a folder and pass --from FOLDER")


def _safe_member(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return not p.is_absolute() and ".." not in p.parts


def archive_members(archive: Path) -> Dict[str, int]:
    """{member name: size in bytes} of the regular files in a tar or zip archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            return {i.filename: i.file_size for i in z.infolist() if not i.is_dir()}
    with tarfile.open(archive) as t:
        return {m.name: m.size for m in t.getmembers() if m.isfile()}


def unpack(archive: Path, dest: Path, pick: Optional[Dict[str, Path]] = None,
           last: Sequence[str] = ()) -> List[Path]:
    """Unpack a verified archive into ``dest`` through a staging folder beside it.

    pick: {member: target path} to take only those members (anywhere on the same file
    system); None takes every member at its own relative path under ``dest``.
    last: members moved into place after all the others, so a file that marks the folder
    as complete only appears once the rest is there. Returns the paths written.
    """
    from torchvision.datasets.utils import extract_archive
    members = archive_members(archive)
    bad = [m for m in members if not _safe_member(m)]
    if bad:
        raise DownloadError(f"{archive}: member {bad[0]!r} would be written outside the target "
                            f"folder; the archive is not the published one. Delete it")
    if pick is not None:
        absent = [m for m in pick if m not in members]
        if absent:
            raise DownloadError(f"{archive} has no member {absent[0]!r}; delete it and fetch it "
                                f"again")
    need = sum(members[m] for m in (pick or members))
    dest = Path(dest)
    check_free(dest, need, f"unpacking {archive.name}")
    staging = dest / f".unpack-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if pick is None:
            extract_archive(str(archive), str(staging))
            moves = {m: dest / m for m in members}
        else:
            with zipfile.ZipFile(archive) as z:
                for m in pick:
                    z.extract(m, staging)
            moves = dict(pick)
        order = sorted(moves, key=lambda m: m in set(last))
        for m in order:
            target = Path(moves[m])
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / m, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [Path(moves[m]) for m in order]
