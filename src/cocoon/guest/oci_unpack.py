"""OCI images unpacked into root filesystems: an image layout directory, or an OCI archive (a
tar of one, as `podman save --format oci-archive` writes it).

The manifest is found through `index.json` (the one manifest there, or the linux/amd64 one of
an image index), every blob is checked against its sha256 digest, and the layers are applied in
order into a fresh directory of the asset cache: `.wh.NAME` deletes NAME of the layers below,
`.wh..wh..opq` empties its directory of them (entries of the same layer stay, whatever their
order in the tar). The result is cached by the manifest's digest (`<cache>/oci/<digest>/`), so
the second sandbox of an image starts without unpacking.

An image is untrusted input, unpacked by root on the host: every entry is made beneath the root
by the kernel (`openat2` with `RESOLVE_IN_ROOT`), so a layer's symlink `etc -> /etc` followed by
`etc/passwd` writes the image's /etc, never the host's; names with `..` are refused; device
nodes are skipped (served by virtiofsd from the host, one would open the host's device).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cocoon.errors import ImageError
from cocoon.guest import cache
from cocoon.linux.paths import make_in_root, open_in_root

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_JSON = 4 << 20  # an index, manifest or config bigger than this is not an image's


@dataclass(frozen=True)
class ImageConfig:
    """What the image says its processes get by default."""

    env: tuple[str, ...] = ()
    cwd: str = "/"
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> ImageConfig:
        config = (data or {}).get("config") or {}
        return cls(env=tuple(config.get("Env") or ()), cwd=config.get("WorkingDir") or "/",
                   entrypoint=tuple(config.get("Entrypoint") or ()),
                   cmd=tuple(config.get("Cmd") or ()))

    def to_json(self) -> dict[str, Any]:
        return {"config": {"Env": list(self.env), "WorkingDir": self.cwd,
                           "Entrypoint": list(self.entrypoint), "Cmd": list(self.cmd)}}


@dataclass(frozen=True)
class UnpackedImage:
    digest: str  # the manifest's, "sha256:<hex>"
    rootfs: Path
    config: ImageConfig


# --- reading blobs from a layout directory or an archive ----------------------------------------


class _Blobs:
    """The files of an OCI layout, from a directory or from a tar archive of one."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if source.is_file():
            try:
                self._tar = tarfile.open(source, "r:*")  # noqa: SIM115 (closed by close())
                for member in self._tar.getmembers():
                    if member.isfile():
                        self._members[os.path.normpath(member.name).lstrip("/")] = member
            except (tarfile.TarError, OSError, EOFError) as err:
                raise ImageError(f"image {source}: not an OCI archive: {err}",
                                 path=str(source)) from err

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if self._tar is None:
            try:
                f = (self.source / name).open("rb")
            except FileNotFoundError:
                raise ImageError(f"image {self.source}: {name} is missing",
                                 path=str(self.source)) from None
            with f:
                yield f
            return
        member = self._members.get(name)
        extracted = self._tar.extractfile(member) if member is not None else None
        if extracted is None:
            raise ImageError(f"image {self.source}: {name} is missing from the archive",
                             path=str(self.source))
        with extracted:
            yield extracted

    def json(self, name: str) -> Any:
        with self.open(name) as f:
            data = f.read(MAX_JSON + 1)
        return _parse_json(self.source, name, data)

    def blob_json(self, descriptor: dict[str, Any]) -> tuple[Any, str]:
        digest = _digest_of(self.source, descriptor)
        with self.open(_blob_name(digest)) as f:
            data = f.read(MAX_JSON + 1)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise ImageError(f"image {self.source}: blob {digest} does not match its digest",
                             path=str(self.source))
        return _parse_json(self.source, digest, data), digest


def _parse_json(source: Path, name: str, data: bytes) -> Any:
    if len(data) > MAX_JSON:
        raise ImageError(f"image {source}: {name} is larger than {MAX_JSON} bytes",
                         path=str(source))
    try:
        return json.loads(data)
    except ValueError as err:
        raise ImageError(f"image {source}: {name} is not JSON: {err}", path=str(source)) from err


def _digest_of(source: Path, descriptor: Any) -> str:
    digest = descriptor.get("digest", "") if isinstance(descriptor, dict) else ""
    algorithm, _, hexdigest = str(digest).partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(
            c in "0123456789abcdef" for c in hexdigest):
        raise ImageError(f"image {source}: unsupported or malformed digest {digest!r}",
                         path=str(source))
    return str(digest)


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.partition(":")[2]


def is_oci_image(path: Path) -> bool:
    """Whether `path` is an OCI layout directory (with `oci-layout`) or a file (an archive)."""
    return path.is_file() or (path / "oci-layout").is_file()


def _manifest(blobs: _Blobs) -> tuple[dict[str, Any], str]:
    index = blobs.json("index.json")
    for _depth in range(4):  # an index may point at an image index, once or twice
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or not manifests:
            raise ImageError(f"image {blobs.source}: its index lists no manifest",
                             path=str(blobs.source))
        chosen = manifests[0] if len(manifests) == 1 else next(
            (m for m in manifests if isinstance(m, dict)
             and (m.get("platform") or {}).get("os") == "linux"
             and (m.get("platform") or {}).get("architecture") == "amd64"), None)
        if chosen is None:
            raise ImageError(f"image {blobs.source}: {len(manifests)} manifests and none for "
                             "linux/amd64", path=str(blobs.source))
        document, digest = blobs.blob_json(chosen)
        if chosen.get("mediaType") in (MT_INDEX, DOCKER_LIST) or "manifests" in document:
            index = document
            continue
        return document, digest
    raise ImageError(f"image {blobs.source}: image indexes nested too deep",
                     path=str(blobs.source))


# --- applying layers -----------------------------------------------------------------------------


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        self.sha.update(data)
        buffer[:len(data)] = data
        return len(data)


def _clean_name(name: str) -> str | None:
    parts = [p for p in name.split("/") if p and p != "."]
    if any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _remove_at(parent_fd: int, name: str) -> None:
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
        try:
            for entry in os.listdir(child):
                _remove_at(child, entry)
        finally:
            os.close(child)
        os.rmdir(name, dir_fd=parent_fd)
    else:
        os.unlink(name, dir_fd=parent_fd)


class _Layer:
    """One layer applied on top of the root at `root_fd`."""

    def __init__(self, root_fd: int, source: Path) -> None:
        self.root = root_fd
        self.source = source
        self.made: set[str] = set()  # entries of this layer: whiteouts do not touch them

    def _parent(self, path: str) -> tuple[int, str]:
        head, _, base = path.rpartition("/")
        return (make_in_root(self.root, head) if head else os.dup(self.root)), base

    def whiteout(self, path: str) -> None:
        head, _, base = path.rpartition("/")
        try:
            parent = open_in_root(self.root, head or ".", os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            if base == OPAQUE:
                for entry in os.listdir(parent):
                    if (f"{head}/{entry}" if head else entry) not in self.made:
                        _remove_at(parent, entry)
            else:
                target = base[len(WHITEOUT):]
                if (f"{head}/{target}" if head else target) not in self.made:
                    _remove_at(parent, target)
        finally:
            os.close(parent)

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
        if member.ischr() or member.isblk():
            return  # never a host device node in the share
        parent, base = self._parent(path)
        try:
            self._add_at(tar, member, parent, base)
        finally:
            os.close(parent)
        self.made.add(path)

    def _add_at(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int,
                base: str) -> None:
        try:
            existing = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
            _remove_at(parent, base)
            existing = None
        if member.isdir():
            if existing is None:
                os.mkdir(base, 0o700, dir_fd=parent)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=parent)
        elif member.islnk():
            target = _clean_name(member.linkname)
            if target is None:
                raise ImageError(f"image {self.source}: hard link {member.name} -> "
                                 f"{member.linkname} leaves the image", path=str(self.source))
            head, _, tbase = target.rpartition("/")
            tparent = open_in_root(self.root, head or ".", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.link(tbase, base, src_dir_fd=tparent, dst_dir_fd=parent,
                        follow_symlinks=False)
            finally:
                os.close(tparent)
            return
        elif member.isfifo():
            os.mkfifo(base, 0o600, dir_fd=parent)
        elif member.isreg():
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=parent)
            with os.fdopen(fd, "wb") as out:
                data = tar.extractfile(member)
                if data is not None:
                    shutil.copyfileobj(data, out, 1 << 20)
        else:
            return
        os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        if not member.issym():
            os.chmod(base, member.mode & 0o7777, dir_fd=parent)
        os.utime(base, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)


def apply_layer(root: Path, stream: IO[bytes], source: Path) -> None:
    """Apply one layer (an uncompressed or gzip tar stream) on top of `root`."""
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    layer = _Layer(root_fd, source)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                path = _clean_name(member.name)
                if path is None:
                    raise ImageError(f"image {source}: layer entry {member.name!r} leaves the "
                                     "image", path=str(source))
                if not path:
                    continue
                try:
                    if path.rpartition("/")[2].startswith(WHITEOUT):
                        layer.whiteout(path)
                    else:
                        layer.add(tar, member, path)
                except OSError as err:
                    raise ImageError(f"image {source}: cannot unpack {path!r}: "
                                     f"{err.strerror or err}", path=str(source)) from err
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ImageError(f"image {source}: a layer is not a readable tar: {err}",
                         path=str(source)) from err
    finally:
        os.close(root_fd)


def _apply_layers(blobs: _Blobs, manifest: dict[str, Any], root: Path) -> None:
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ImageError(f"image {blobs.source}: its manifest lists no layers",
                         path=str(blobs.source))
    for descriptor in layers:
        digest = _digest_of(blobs.source, descriptor)
        media = str(descriptor.get("mediaType", ""))
        if "zstd" in media:
            raise ImageError(f"image {blobs.source}: layer {digest} is zstd-compressed, which "
                             "Cocoon does not unpack (save it with gzip or no compression)",
                             path=str(blobs.source))
        with blobs.open(_blob_name(digest)) as raw:
            hashing = _Hashing(raw)
            apply_layer(root, io.BufferedReader(hashing, 1 << 20), blobs.source)
            while hashing.read(1 << 20):  # the digest covers the whole blob
                pass
        if "sha256:" + hashing.sha.hexdigest() != digest:
            raise ImageError(f"image {blobs.source}: layer {digest} does not match its digest",
                             path=str(blobs.source))


def unpack(source: Path, cache_dir: Path | None = None) -> UnpackedImage:
    """The image at `source` (layout directory or archive) unpacked, from the cache if it is
    there already."""
    if not source.exists():
        raise ImageError(f"image {source} does not exist", path=str(source))
    blobs = _Blobs(source)
    try:
        manifest, digest = _manifest(blobs)
        if manifest.get("mediaType") not in (None, MT_MANIFEST, DOCKER_MANIFEST):
            raise ImageError(f"image {source}: unsupported manifest type "
                             f"{manifest.get('mediaType')!r}", path=str(source))
        base = cache.resolve_cache_dir(cache_dir)
        dest = base / "oci" / digest.partition(":")[2][:32]
        found = _cached(dest, digest)
        if found is not None:
            return found
        with cache.locked(base, "oci-image"):
            found = _cached(dest, digest)
            if found is not None:
                return found
            config, _ = blobs.blob_json(manifest.get("config") or {})
            with cache.building(dest) as tmp:
                (tmp / "rootfs").mkdir(mode=0o755)
                _apply_layers(blobs, manifest, tmp / "rootfs")
                image_config = ImageConfig.from_json(config)
                cache.write_json_atomic(tmp / "image.json",
                                        {"digest": digest, **image_config.to_json()})
        return UnpackedImage(digest, dest / "rootfs", image_config)
    finally:
        blobs.close()


def _cached(dest: Path, digest: str) -> UnpackedImage | None:
    data = cache.read_json(dest / "image.json")
    if not isinstance(data, dict) or data.get("digest") != digest:
        return None
    return UnpackedImage(digest, dest / "rootfs", ImageConfig.from_json(data))
