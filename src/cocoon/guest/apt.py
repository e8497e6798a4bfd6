"""Debian packages as build inputs: resolve versions with apt-cache, fetch, unpack.

Nothing is ever installed into the host: packages are fetched with `apt-get download` into the
asset cache and unpacked with `dpkg-deb -x` where the builder says. Resolving costs most of a
second per apt-cache call here (the host keeps no binary package cache), so a resolution is
stored in the asset cache together with a key of the apt state (the package lists and sources
it was made from) and reused until `apt-get update` or a change of sources moves that key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cocoon.errors import AssetError
from cocoon.guest import cache as cachemod

logger = logging.getLogger("cocoon.guest.apt")

APT_LISTS = Path("/var/lib/apt/lists")
APT_ETC = Path("/etc/apt")
ARCH = "amd64"


@dataclass(frozen=True)
class Package:
    """One resolved binary package: what apt would fetch for `name` right now."""

    name: str
    version: str
    arch: str
    sha256: str
    size: int
    depends: str = ""

    @property
    def deb_name(self) -> str:
        """The file name apt-get download gives it (an epoch's colon is escaped)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


def apt_state() -> str:
    """A key that changes whenever apt could resolve a package differently."""
    h = hashlib.sha256()
    sources = [APT_LISTS, APT_ETC / "sources.list.d", APT_ETC / "preferences.d"]
    files = [APT_ETC / "sources.list", APT_ETC / "preferences"]
    for d in sources:
        if d.is_dir():
            files.extend(p for p in d.iterdir() if p.is_file() and p.name != "lock")
    for path in sorted(files):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _state_key(names: Sequence[str]) -> str:
    return hashlib.sha256((apt_state() + "\0" + "\0".join(sorted(names))).encode()).hexdigest()


def lookup(cache: Path, label: str, names: Sequence[str]) -> dict[str, Package] | None:
    """The stored resolution of `names` for the present apt state, or None; never runs apt."""
    stored = cachemod.read_json(cache / "apt" / f"{label}.json")
    if not isinstance(stored, dict) or stored.get("key") != _state_key(names):
        return None
    try:
        return {name: Package(**fields) for name, fields in stored["packages"].items()}
    except (KeyError, TypeError):
        return None


def resolve(cache: Path, label: str, names: Sequence[str]) -> dict[str, Package]:
    """Resolve `names` to the versions apt would fetch now, reusing a stored resolution."""
    found = lookup(cache, label, names)
    if found is not None:
        return found
    packages = _apt_cache_show(names)
    cachemod.write_json_atomic(cache / "apt" / f"{label}.json", {
        "key": _state_key(names),
        "packages": {name: asdict(pkg) for name, pkg in packages.items()},
    })
    return packages


def _apt_cache_show(names: Sequence[str]) -> dict[str, Package]:
    cmd = ["apt-cache", "show", "--no-all-versions", *names]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise AssetError("apt-cache not found: guest assets are built from Debian packages",
                         command=cmd) from err
    packages: dict[str, Package] = {}
    for record in proc.stdout.split("\n\n"):
        fields = _parse_record(record)
        name = fields.get("Package")
        if not name or name in packages or fields.get("Architecture") not in (ARCH, "all"):
            continue
        packages[name] = Package(name=name, version=fields["Version"],
                                 arch=fields["Architecture"], sha256=fields["SHA256"],
                                 size=int(fields.get("Size", "0")),
                                 depends=fields.get("Depends", ""))
    missing = sorted(set(names) - set(packages))
    if missing:
        raise AssetError(
            f"apt cannot find {', '.join(missing)} (run apt-get update?): "
            f"{proc.stderr.strip() or 'no candidate'}",
            missing=missing, command=cmd, returncode=proc.returncode)
    return packages


def _parse_record(record: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in record.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


_PIN = re.compile(r"^\s*(?P<name>[a-z0-9][a-z0-9+.-]*)\s*\(\s*=\s*(?P<version>[^)\s]+)\s*\)")


def pinned_dependency(pkg: Package, prefix: str) -> tuple[str, str]:
    """The `name (= version)` dependency of a metapackage whose name starts with `prefix`."""
    for alternative in re.split(r"[,|]", pkg.depends):
        m = _PIN.match(alternative)
        if m and m["name"].startswith(prefix):
            return m["name"], m["version"]
    raise AssetError(f"{pkg.name} {pkg.version} has no pinned dependency on {prefix}*",
                     package=pkg.name, depends=pkg.depends)


def fetch(cache: Path, packages: Iterable[Package]) -> dict[str, Path]:
    """The cached .deb of every package, downloading the missing ones in one apt-get call.

    Every file is checked against the SHA256 apt published for it before it enters the cache.
    """
    debs = cache / "debs"
    wanted = {pkg.name: pkg for pkg in packages}
    paths = {name: debs / pkg.deb_name for name, pkg in wanted.items()}
    missing = [pkg for name, pkg in wanted.items() if not paths[name].is_file()]
    if not missing:
        return paths
    with cachemod.locked(cache, "debs"):
        missing = [pkg for pkg in missing if not paths[pkg.name].is_file()]
        if missing:
            _download(debs, missing)
    return paths


def _download(debs: Path, packages: Sequence[Package]) -> None:
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=debs) as tmp:
        cmd = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
               *(f"{p.name}={p.version}" for p in packages)]
        logger.info("downloading %s", " ".join(cmd[5:]))
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise AssetError(f"apt-get download failed: {_last_error(proc.stderr)}",
                             command=cmd, returncode=proc.returncode, stderr=proc.stderr)
        for pkg in packages:
            got = Path(tmp) / pkg.deb_name
            if not got.is_file():
                raise AssetError(f"apt-get download did not produce {pkg.deb_name}",
                                 package=pkg.name, files=sorted(os.listdir(tmp)))
            digest = sha256_file(got)
            if digest != pkg.sha256:
                raise AssetError(f"{pkg.deb_name} has SHA256 {digest}, apt says {pkg.sha256}",
                                 package=pkg.name, got=digest, expected=pkg.sha256)
            os.replace(got, debs / pkg.deb_name)


def _last_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("E:")] or stderr.splitlines()
    return lines[-1] if lines else "no output"


def unpack(deb: Path, dest: Path) -> None:
    """`dpkg-deb -x`: the package's files under `dest`, no maintainer scripts, no dpkg database."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = ["dpkg-deb", "-x", str(deb), str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssetError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()}",
                         command=cmd, returncode=proc.returncode)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def remove_cached(cache: Path, pkg: Package) -> None:
    """Drop a .deb that is no longer needed once unpacked (the kernel's is large)."""
    path = cache / "debs" / pkg.deb_name
    if path.is_file():
        path.unlink()


def which_or_none(name: str) -> str | None:
    """shutil.which that also looks in the sbin directories a non-login root PATH may lack."""
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(name, path=path)
