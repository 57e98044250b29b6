"""The results store: SQLAlchemy models (``models.py``) and the :class:`Store` that reads and writes them
(``store.py``)."""

from rsbench.store.store import RESULT_COLUMNS, Store, open_store, store_url

__all__ = ["RESULT_COLUMNS", "Store", "open_store", "store_url"]
