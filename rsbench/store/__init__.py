"""The results store: SQLAlchemy models (``models.py``), the :class:`Store` every other module reads and
writes it through (``store.py``), its schema migrations (``migrations/``) and the redaction of store URLs'
passwords (``redaction.py``).

The names below load ``store.py`` (SQLAlchemy, pandas, torch) on first use, so that importing
``rsbench.store.redaction`` (every command line does) stays light and ``rsbench launch`` can set torch's
C++ log level before torch loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rsbench.store.models import RADIUS_STEP
    from rsbench.store.store import (
        RESULT_COLUMNS,
        Store,
        certified_count,
        frame_rows,
        open_store,
        store_url,
        upgrade_store,
    )  # fmt: skip

__all__ = [
    "RADIUS_STEP", "RESULT_COLUMNS", "Store", "certified_count", "frame_rows", "open_store", "store_url",
    "upgrade_store",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name == "RADIUS_STEP":
        from rsbench.store import models

        return models.RADIUS_STEP
    if name in __all__:
        from rsbench.store import store

        return getattr(store, name)
    raise AttributeError(f"module 'rsbench.store' has no attribute {name!r}")
