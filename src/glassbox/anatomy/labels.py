"""Head labels written into a checkpoint by `glassbox annotate`, read back for display.

They live in the safetensors `__metadata__` under ATLAS_KEY (a JSON string), or, for GGUF and pickle
checkpoints that we do not rewrite, in a sidecar file next to the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glassbox.checkpoint.base import Checkpoint

ATLAS_KEY = "glassbox.atlas"
SIDECAR_SUFFIX = ".glassbox-atlas.json"


def sidecar_path(checkpoint_path: Path) -> Path:
    return checkpoint_path.with_name(checkpoint_path.name + SIDECAR_SUFFIX)


def read_labels(checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The atlas stored with this checkpoint, or None. A malformed one is ignored with a warning."""
    text = checkpoint.metadata.get(ATLAS_KEY)
    where = f"__metadata__[{ATLAS_KEY!r}]"
    if text is None:
        side = sidecar_path(Path(checkpoint.path))
        if not side.is_file():
            return None
        where = str(side)
        try:
            text = side.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            checkpoint.warnings.append(f"{where}: unreadable head labels ignored")
            return None
    try:
        labels = json.loads(text)
    except json.JSONDecodeError:
        checkpoint.warnings.append(f"{where}: head labels are not valid JSON; ignored")
        return None
    return labels if isinstance(labels, dict) else None
