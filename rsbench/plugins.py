"""The plugin manager: loads every ``rsbench`` entry point and keeps one registry per kind.

Built-in plugins (the ``rsbench_plugins`` package) come through the same entry-point group as third
parties'. ``RSBENCH_LOAD_PLUGINS`` limits which third-party distributions load: unset loads all, an empty
string loads only the built-ins, ``"dist-a,dist-b"`` the built-ins plus those distributions.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
from typing import Any, Generic, TypeVar

import pluggy

from rsbench import hookspecs
from rsbench.errors import RsbenchError, did_you_mean
from rsbench.methods import TrainingMethod
from rsbench.params import describe_params
from rsbench.specs import Architecture, Certifier, Dataset

T = TypeVar("T")

BUILTIN_DISTRIBUTION = "rsbench"
KINDS: dict[str, tuple[str, type]] = {  # kind: (hook, what it registers)
    "method": ("register_training_methods", TrainingMethod),
    "architecture": ("register_architectures", Architecture),
    "certifier": ("register_certifiers", Certifier),
    "dataset": ("register_datasets", Dataset),
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


class Registry(Generic[T]):
    """Things of one kind by unique name, each checked at registration to be a ``T`` (a typo'd or
    half-made plugin fails when it registers, naming the plugin); unknown names raise with close matches
    suggested."""

    def __init__(self, kind: str, expected: type):
        self.kind = kind
        self.expected = expected
        self._items: dict[str, T] = {}
        self.origin: dict[str, str] = {}

    def add(self, item: Any, plugin: str) -> None:
        valid = issubclass(item, self.expected) if isinstance(item, type) else isinstance(item, self.expected)
        if not valid:
            raise RsbenchError(
                f"plugin {plugin!r} registered {item!r} as a {self.kind}, which is not a {self.expected.__name__}",
                f"register {self.expected.__module__}.{self.expected.__name__} objects, or uninstall the plugin",
            )
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise RsbenchError(f"plugin {plugin!r} registered a {self.kind} without a name")
        if name in self._items:
            raise RsbenchError(
                f"{self.kind} {name!r} registered twice: by {self.origin[name]!r} and by {plugin!r}",
                "disable one of them with RSBENCH_LOAD_PLUGINS or rename it",
            )
        self._items[name] = item
        self.origin[name] = plugin

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        for prefix, item in self._items.items():
            if getattr(item, "prefix", False) and name.startswith(prefix) and len(name) > len(prefix):
                return item
        raise RsbenchError(f"unknown {self.kind} {name!r}", did_you_mean(name, self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


@dataclasses.dataclass
class Registries:
    """One typed registry per kind of plugin."""

    method: Registry[type[TrainingMethod]]
    architecture: Registry[Architecture]
    certifier: Registry[Certifier]
    dataset: Registry[Dataset]

    def __getitem__(self, kind: str) -> Registry[Any]:
        return getattr(self, kind)


class PluginManager:
    def __init__(self, load_entry_points: bool = True):
        self.pm = pluggy.PluginManager("rsbench")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self._registries: Registries | None = None
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
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as error:
            raise RsbenchError(
                f"plugin {name!r} from {distribution} has a hook that does not match rsbench's: {error}",
                "see CONTRIBUTING.md for the hook signatures, or skip it with RSBENCH_LOAD_PLUGINS=''",
            ) from None
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.info[name] = PluginInfo(name, module, distribution, version)
        self._registries = None

    @property
    def registries(self) -> Registries:
        """Every registered thing, collected by calling each plugin's hooks once (after any register)."""
        if self._registries is None:
            registries = Registries(**{kind: Registry(kind, expected) for kind, (_, expected) in KINDS.items()})
            for info in self.info.values():
                info.registers = {}
            for kind, (hook_name, _) in KINDS.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    self._call_hook(impl, registries[kind], kind)
            self._registries = registries
        return self._registries

    def _call_hook(self, impl: Any, registry: Registry[Any], kind: str) -> None:
        plugin = impl.plugin_name

        def register(item: Any) -> None:
            registry.add(item, plugin)
            self.info[plugin].registers.setdefault(kind, []).append(item.name)

        try:
            impl.function(register=register)
        except RsbenchError:
            raise
        except Exception as error:
            raise RsbenchError(
                f"plugin {plugin!r} failed in {impl.function.__name__}: {type(error).__name__}: {error}",
                "fix or uninstall it, or skip third-party plugins with RSBENCH_LOAD_PLUGINS=''",
            ) from error

    @property
    def methods(self) -> Registry[type[TrainingMethod]]:
        return self.registries.method


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


def get_method(name: str) -> type[TrainingMethod]:
    return get_manager().registries.method.get(name)


def get_architecture(name: str) -> Architecture:
    return get_manager().registries.architecture.get(name)


def get_certifier(name: str) -> Certifier:
    return get_manager().registries.certifier.get(name)


def get_dataset(name: str) -> Dataset:
    return get_manager().registries.dataset.get(name)


def plugin_sources(**used: str | None) -> dict[str, dict[str, str]]:
    """For each ``kind=name`` used by a run (``method="consistency", certifier="cohen"`` ...), the plugin that
    registered it, with its distribution and version: a run's provenance names everything that built it."""
    manager = get_manager()
    sources = {}
    for kind, name in used.items():
        if name is None:
            continue
        registry = manager.registries[kind]
        item = registry.get(name)
        info = manager.info[registry.origin[item.name]]
        sources[kind] = {"name": name, "plugin": info.name, "distribution": info.distribution, "version": info.version}
    return sources


def describe_plugins() -> list[dict[str, Any]]:
    """Every loaded plugin (built-ins first): source distribution, version, and what it registers with
    hyperparameters and presets, for ``rsbench plugins`` and its ``--json``."""
    manager = get_manager()
    registries = manager.registries
    listing = []
    for info in sorted(manager.info.values(), key=lambda i: (not i.builtin, i.name)):
        entry: dict[str, Any] = {
            "name": info.name,
            "module": info.module,
            "source": "built-in" if info.builtin else info.distribution,
            "version": info.version,
            "registers": {},
        }
        for kind, names in info.registers.items():
            entry["registers"][kind] = [_describe(registries[kind].get(name)) for name in names]
        listing.append(entry)
    return listing


def _describe(thing: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"name": thing.name, "description": thing.description}
    if hasattr(thing, "Params"):
        item["params"] = describe_params(thing.Params)
    if getattr(thing, "presets", None):
        item["presets"] = [
            {"name": p.name, "description": p.description, "dataset": p.dataset, "sigma": p.sigma, "params": p.params}
            for p in thing.presets
        ]
    return item
