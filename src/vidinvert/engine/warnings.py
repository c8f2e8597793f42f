"""The library's warnings raised during a job, collected so that every front end can show them (and the settings
JSON records them)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

from ..errors import Note

PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)  # the vidinvert package: whose warnings are ours


@contextmanager
def collect_warnings(into: list[str], notes: list[str] | None = None):
    """Record the library's warnings raised inside the block into ``into`` (one line each, no repeats), its
    ``errors.Note``s into ``notes`` (``None``: ``into``); other packages' warnings are shown as usual once the block
    ends."""
    others = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for item in caught:
                    if str(item.filename).startswith(PACKAGE_DIR) and issubclass(item.category, UserWarning):
                        line = " ".join(str(item.message).split())
                        where = notes if notes is not None and issubclass(item.category, Note) else into
                        if line not in where:
                            where.append(line)
                    else:
                        others.append(item)
    finally:  # outside catch_warnings: re-showing inside it would record them again, endlessly
        for item in others:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
