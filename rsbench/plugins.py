"""The plugin manager: loads every ``rsbench`` entry point and keeps one registry per kind.

Built-in plugins (the ``rsbench_plugins`` package) come through the same entry-point group as third
parties'. ``RSBENCH_LOAD_PLUGINS`` limits which third-party distributions load: unset loads all, an empty
string loads only the built-ins, ``"dist-a,dist-b"`` the built-ins plus those distributions.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
from typing import Any

import pluggy

from rsbench import hookspecs
from rsbench.errors import RsbenchError, did_you_mean

BUILTIN_DISTRIBUTION = "rsbench"
KINDS = {
    "method": "register_training_methods",
    "architecture": "register_architectures",
    "certifier": "register_certifiers",
    "dataset": "register_datasets",
}


@dataclasses.dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str
    version: str
    registers: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION


class Registry:
    """Things of one kind by unique name; unknown names raise with close matches suggested."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}
        self.origin: dict[str, str] = {}

    def add(self, item: Any, plugin: str) -> None:
        name = item.name
        if name in self._items:
            raise RsbenchError(
                f"{self.kind} {name!r} registered twice: by {self.origin[name]!r} and by {plugin!r}",
                "disable one of them with RSBENCH_LOAD_PLUGINS or rename it",
            )
        self._items[name] = item
        self.origin[name] = plugin

    def get(self, name: str) -> Any:
        if name in self._items:
            return self._items[name]
        for item in self._items.values():
            if getattr(item, "prefix", False) and name.startswith(item.name) and len(name) > len(item.name):
                return item
        raise RsbenchError(f"unknown {self.kind} {name!r}", did_you_mean(name, self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, Any]]:
        return sorted(self._items.items())


class PluginManager:
    def __init__(self, load_entry_points: bool = True):
        self.pm = pluggy.PluginManager("rsbench")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self._registries: dict[str, Registry] | None = None
        if load_entry_points:
            self._load_entry_points()

    def _load_entry_points(self) -> None:
        allowed = os.environ.get("RSBENCH_LOAD_PLUGINS")
        allowed_set = None if allowed is None else {d.strip() for d in allowed.split(",") if d.strip()}
        for entry_point in importlib.metadata.entry_points(group="rsbench"):
            dist = entry_point.dist.name if entry_point.dist else "unknown"
            version = entry_point.dist.version if entry_point.dist else ""
            if dist != BUILTIN_DISTRIBUTION and allowed_set is not None and dist not in allowed_set:
                continue
            if self.pm.has_plugin(entry_point.name):
                continue  # the same distribution seen twice on sys.path
            try:
                module = entry_point.load()
            except Exception as error:
                raise RsbenchError(
                    f"plugin {entry_point.name!r} from {dist} failed to load: {error}",
                    "fix or uninstall it, or skip third-party plugins with RSBENCH_LOAD_PLUGINS=''",
                ) from error
            self.register(module, entry_point.name, dist, version)

    def register(self, plugin: Any, name: str, distribution: str = "local", version: str = "") -> None:
        """Register a module or object implementing hooks (also for tests and notebooks)."""
        self.pm.register(plugin, name=name)
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.info[name] = PluginInfo(name, module, distribution, version)
        self._registries = None

    @property
    def registries(self) -> dict[str, Registry]:
        if self._registries is None:
            registries = {kind: Registry(kind) for kind in KINDS}
            for info in self.info.values():
                info.registers = {}
            for kind, hook_name in KINDS.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    plugin_name = impl.plugin_name

                    def register(item, _kind=kind, _plugin=plugin_name):
                        registries[_kind].add(item, _plugin)
                        self.info[_plugin].registers.setdefault(_kind, []).append(item.name)

                    impl.function(register=register)
            self._registries = registries
        return self._registries


_manager: PluginManager | None = None


def get_manager() -> PluginManager:
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager


def reset_manager() -> None:
    """Forget loaded plugins (the next call reloads the entry points)."""
    global _manager
    _manager = None


def get_method(name: str):
    return get_manager().registries["method"].get(name)


def get_architecture(name: str):
    return get_manager().registries["architecture"].get(name)


def get_certifier(name: str):
    return get_manager().registries["certifier"].get(name)


def get_dataset(name: str):
    return get_manager().registries["dataset"].get(name)
