"""rsbench's built-in plugins, one module per dataset, architecture family, method and certifier.

Each module is registered through the ``rsbench`` entry-point group in ``pyproject.toml``, exactly as a
third-party plugin would be.
"""
