"""Hook specifications: how a plugin adds training methods, architectures, certifiers and datasets.

Every hook receives a ``register`` callable; a plugin module implements any of them::

    from rsbench import hookimpl

    @hookimpl
    def register_training_methods(register):
        register(MyMethod)

and is announced in its distribution's ``pyproject.toml``::

    [project.entry-points.rsbench]
    my_method = "my_package.my_method"

The built-in plugins (``rsbench_plugins``) are registered through the same entry-point group.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("rsbench")
hookimpl = pluggy.HookimplMarker("rsbench")


@hookspec
def register_training_methods(register):
    """Call ``register(cls)`` for each :class:`rsbench.methods.TrainingMethod` subclass."""


@hookspec
def register_architectures(register):
    """Call ``register(Architecture(...))`` for each architecture (or family, via a prefix)."""


@hookspec
def register_certifiers(register):
    """Call ``register(Certifier(...))`` for each certification procedure."""


@hookspec
def register_datasets(register):
    """Call ``register(Dataset(...))`` for each dataset."""
