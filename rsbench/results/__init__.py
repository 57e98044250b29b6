"""Results: what the store holds, turned into what people read and exchange.

- ``board``: leaderboards as a typed :class:`~rsbench.results.board.Board` (rows of distinct training seeds,
  ranked within one protocol), built from the per-run metrics the store keeps;
- ``render``: a board as markdown, LaTeX, CSV, JSON or a terminal table; ``tables``: the ``runs`` and
  ``plugins`` listings;
- ``figures``: certified accuracy against radius; ``site``: the static website;
- ``records``: run records (the JSON submission format) in and out; ``cohen_tsv``: Cohen's TSV logs in and out.
"""
