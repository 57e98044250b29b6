"""The results store: SQLAlchemy models (``models.py``), the :class:`Store` every other module reads and
writes it through (``store.py``), and its schema migrations (``migrations/``)."""

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
