"""Safe access to a bundle: a directory, a .tar/.tgz archive, or a single capture file.

Archives are extracted into a private temporary directory, member by member, refusing absolute
paths, `..`, links, devices and FIFOs, and stopping at configurable limits on member count, path
depth, and bytes actually written (so a gzip bomb is cut off by what it inflates to, not by what
its headers claim).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..anomalies import AnomalyLog
from .parsers.pcap import sniff_capture


class BundleError(Exception):
    """The input cannot be used at all (missing, unreadable, not a bundle, empty, over a limit)."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what an archive may unpack to. Raise them for fleet-sized bundles."""

    max_total_bytes: int = 64 * 1024**3
    max_member_bytes: int = 32 * 1024**3
    max_members: int = 200_000
    max_depth: int = 32


@dataclass
class Materialized:
    root: Path  # directory holding the bundle's files
    files: list[str]  # relative POSIX paths of regular files
    tempdir: tempfile.TemporaryDirectory | None = None

    def cleanup(self) -> None:
        if self.tempdir is not None:
            self.tempdir.cleanup()
            self.tempdir = None


def materialize(path: str | Path, log: AnomalyLog, limits: Limits | None = None) -> Materialized:
    limits = limits or Limits()
    p = Path(path)
    if not p.exists():
        raise BundleError(f"{p}: no such file or directory")
    if p.is_dir():
        return _directory(p, log, limits)
    if not p.is_file():
        raise BundleError(f"{p}: not a regular file or directory")
    try:
        with open(p, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise BundleError(f"{p}: cannot read: {exc.strerror}") from exc
    if not head:
        raise BundleError(f"{p}: file is empty")
    if sniff_capture(head):
        return Materialized(root=p.parent, files=[p.name])
    if _is_tar(p):
        return _extract(p, log, limits)
    raise BundleError(f"{p}: not a bundle (expected a .tar/.tgz archive, a directory, or a pcap/pcapng file)")


def _is_tar(p: Path) -> bool:
    try:
        return tarfile.is_tarfile(p)
    except (OSError, tarfile.TarError, EOFError):
        return False


def _directory(root: Path, log: AnomalyLog, limits: Limits) -> Materialized:
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        if len(rel_dir.parts) > limits.max_depth:
            log.add(str(rel_dir.as_posix()), "too_deep", f"deeper than {limits.max_depth} levels; skipped")
            dirnames[:] = []
            continue
        for d in list(dirnames):
            if (Path(dirpath) / d).is_symlink():
                log.add((rel_dir / d).as_posix(), "link_refused", "symbolic link to a directory not followed")
                dirnames.remove(d)
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = (rel_dir / name).as_posix()
            if full.is_symlink():
                log.add(rel, "link_refused", "symbolic link not followed")
            elif not full.is_file():
                log.add(rel, "special_file_refused", "not a regular file")
            else:
                files.append(rel)
                if len(files) > limits.max_members:
                    raise BundleError(
                        f"{root}: more than {limits.max_members} files (raise --max-files, or Limits.max_members)"
                    )
    if not files:
        raise BundleError(f"{root}: directory holds no files")
    return Materialized(root=root, files=sorted(files))


def _safe_name(name: str) -> str | None:
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith(("/", "\\")) or ".." in pure.parts or "\\" in name:
        return None
    parts = [x for x in pure.parts if x not in ("", ".")]
    return "/".join(parts) if parts else None


def _extract(archive: Path, log: AnomalyLog, limits: Limits) -> Materialized:
    tmp = tempfile.TemporaryDirectory(prefix="calforensics-")
    root = Path(tmp.name)
    files: list[str] = []
    written = 0
    members = 0
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for m in tar:
                members += 1
                if members > limits.max_members:
                    raise BundleError(
                        f"{archive}: more than {limits.max_members} members (raise --max-files, or Limits.max_members)"
                    )
                name = _safe_name(m.name)
                if m.isdir():
                    continue
                if name is None:
                    log.add(m.name[:200], "unsafe_path_refused", "absolute path or '..' in archive member")
                    continue
                if m.issym() or m.islnk():
                    log.add(name, "link_refused", f"archive link to {m.linkname[:200]!r} not extracted")
                    continue
                if not m.isfile():
                    log.add(name, "special_file_refused", "device, FIFO or other non-regular member")
                    continue
                if name.count("/") >= limits.max_depth:
                    log.add(name, "too_deep", f"deeper than {limits.max_depth} levels; skipped")
                    continue
                if m.size > limits.max_member_bytes:
                    log.add(name, "member_too_large", f"{m.size} bytes exceeds {limits.max_member_bytes}")
                    continue
                dest = root / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                if src is None:
                    continue
                with src, open(dest, "wb") as out:
                    while True:
                        chunk = src.read(1 << 20)
                        if not chunk:
                            break
                        written += len(chunk)
                        if written > limits.max_total_bytes:
                            raise BundleError(
                                f"{archive}: unpacks to more than {limits.max_total_bytes} bytes "
                                "(raise --max-bundle-size, or Limits.max_total_bytes)"
                            )
                        out.write(chunk)
                files.append(name)
    except BundleError:
        tmp.cleanup()
        raise
    except (tarfile.TarError, EOFError, OSError, zlib_error()) as exc:
        if not files:
            tmp.cleanup()
            raise BundleError(f"{archive}: unreadable archive: {exc}") from exc
        log.add("archive", "truncated_archive", f"archive ends early: {exc}; {len(files)} members read")
    if not files:
        tmp.cleanup()
        raise BundleError(f"{archive}: archive holds no files")
    return Materialized(root=root, files=sorted(files), tempdir=tmp)


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def copy_out(m: Materialized, dest: Path) -> None:
    """Copy a materialized bundle somewhere (used by tests and the collector)."""
    for rel in m.files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(m.root / rel, dest / rel)
