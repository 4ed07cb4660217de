"""The plugin manager: built in one function, plugins found through the ``ymir_runner`` entry-point group.

``build_plugin_manager`` adds the hookspecs, blocks the names listed in $YMIR_RUNNER_DISABLE_PLUGINS before
anything is imported, loads each entry point inside its own error boundary, registers the built-in
plugins and checks that every hook implementation matches a spec. :class:`PluginRegistry` is the typed
facade the dispatcher and the CLI use; nothing else touches ``pm.hook``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import pluggy

from . import hookspecs
from .errors import ConfigError, ObjectTypeError
from .protocol.env import TaskKind
from .records import ExecutorSpec
from .version import __version__

if TYPE_CHECKING:  # the task records import more than listing plugins needs
    import argparse

    from .context import TaskContext
    from .protocol.results import Stage

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
DISABLE_ENV_VAR = "YMIR_RUNNER_DISABLE_PLUGINS"
TRACE_ENV_VAR = "YMIR_RUNNER_TRACE"

log = logging.getLogger("ymir_runner.plugins")

TASK_HOOKS = {
    TaskKind.TRAINING: "ymir_runner_train",
    TaskKind.MINING: "ymir_runner_mine",
    TaskKind.INFER: "ymir_runner_infer",
}


@dataclasses.dataclass
class PluginInfo:
    """What ``ymir-runner plugins`` shows about one plugin, loaded or not."""

    name: str
    distribution: str | None = None
    version: str | None = None
    status: str = "loaded"  # loaded | blocked | failed
    error: str | None = None
    hooks: list[str] = dataclasses.field(default_factory=list)
    executors: list[str] = dataclasses.field(default_factory=list)

    @property
    def source(self) -> str:
        """``distribution <name> <version>``, or "" when unknown."""
        return f"distribution {self.distribution} {self.version or ''}".strip() if self.distribution else ""

    @property
    def label(self) -> str:
        return f"{self.name!r} ({self.source})" if self.distribution else repr(self.name)


@dataclasses.dataclass(frozen=True)
class Executor:
    """An executor spec and the plugin (registered name) that provides it."""

    spec: ExecutorSpec
    plugin_name: str


class PluginLoadError(ConfigError):
    """A plugin could not be imported or registered (raised in strict mode or when the task needs it)."""


class PluginRegistry:
    """A typed facade over the pluggy manager."""

    def __init__(self, pm: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
        self.pm = pm
        self.infos = infos
        self._executors: list[Executor] | None = None

    # --- registration --------------------------------------------------------------------------------------

    def register(self, plugin: object, name: str, *, distribution: str | None = None,
                 version: str | None = None) -> None:
        """Register a plugin object (module or instance) under ``name`` and check its hooks."""
        self.pm.register(plugin, name=name)
        self.pm.check_pending()
        self.infos[name] = PluginInfo(name, distribution, version)
        self._executors = None

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.infos.pop(name, None)
        self._executors = None

    def hooks_of(self, name: str) -> list[str]:
        plugin = self.pm.get_plugin(name)
        callers = self.pm.get_hookcallers(plugin) if plugin is not None else None
        return sorted(caller.name for caller in callers or [])

    # --- executors -----------------------------------------------------------------------------------------

    def executors(self) -> list[Executor]:
        """Every executor of every loaded plugin, validated; a plugin whose registration fails is marked
        failed and left out. Two executors with one name are refused, naming both distributions."""
        if self._executors is not None:
            return self._executors
        found: dict[str, Executor] = {}
        for impl in self.pm.hook.ymir_runner_register_executors.get_hookimpls():
            info = self.infos.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
            try:
                # one plugin at a time, so a failure is attributed to it (and tracing still sees the call)
                answers = self._only(impl.plugin_name, "ymir_runner_register_executors")()
                specs = [spec for answer in answers for spec in (answer or ())]
                for spec in specs:
                    if not isinstance(spec, ExecutorSpec):
                        raise TypeError(f"returned {type(spec).__name__}, not ExecutorSpec")
                    self._check_task_hooks(impl.plugin_name, spec)
            except Exception as error:  # one broken plugin must not hide the others
                info.status, info.error = "failed", f"{type(error).__name__}: {error}"
                log.warning("plugin %s failed to register its executors: %s", info.label, info.error)
                continue
            for spec in specs:
                if spec.name in found:
                    other = self.infos[found[spec.name].plugin_name]
                    raise PluginLoadError(
                        f"executor name {spec.name!r} is registered by both {other.label} and {info.label}; "
                        f"uninstall one or block it with {DISABLE_ENV_VAR}")
                found[spec.name] = Executor(spec, impl.plugin_name)
                info.executors.append(spec.name)
        self._executors = list(found.values())
        return self._executors

    def _check_task_hooks(self, plugin_name: str, spec: ExecutorSpec) -> None:
        implemented = set(self.hooks_of(plugin_name))
        missing = sorted(TASK_HOOKS[kind] for kind in spec.tasks if TASK_HOOKS[kind] not in implemented)
        if missing:
            raise TypeError(f"executor {spec.name!r} claims tasks without implementing {', '.join(missing)}")

    def select(self, kind: TaskKind, object_type: int, requested: str | None) -> Executor:
        """The executor for a task: the one named by config key ``plugin``, else the only candidate (an executor
        that is ``named_only`` is never a candidate)."""
        executors = self.executors()
        if requested:
            for executor in executors:
                if executor.spec.name == requested:
                    return self._check_fits(executor, kind, object_type)
            broken = self._failed_matching(requested)
            if broken:
                raise PluginLoadError(f"config key 'plugin': {broken.label} failed to load: {broken.error}")
            for info in self._blocked():
                if requested in {info.name, info.distribution}:
                    raise ConfigError(f"config key 'plugin': plugin {info.label} is blocked by {DISABLE_ENV_VAR}"
                                      f"={os.environ.get(DISABLE_ENV_VAR, '')!r}; remove it from that list")
            raise ConfigError(f"config key 'plugin': no executor named {requested!r}; installed: "
                              f"{self._describe(executors)}{self._blocked_note()}")
        for_kind = [executor for executor in executors
                    if kind in executor.spec.tasks and not executor.spec.named_only]
        fitting = [executor for executor in for_kind if object_type in executor.spec.object_types]
        if len(fitting) == 1:
            return fitting[0]
        if len(fitting) > 1:
            raise ConfigError(f"several executors can run {kind} for object_type {object_type}: "
                              f"{self._describe(fitting)}; choose one with config key 'plugin'")
        failed = [info for info in self.infos.values() if info.status == "failed"]
        notes = "".join(f"; {info.label} failed to load: {info.error}" for info in failed) + self._blocked_note()
        if for_kind:
            raise ObjectTypeError(f"no executor handles object_type {object_type} for {kind}; installed: "
                                  f"{self._describe(for_kind)}{notes}")
        raise ConfigError(f"no installed plugin handles {kind} tasks (installed: {self._describe(executors)}){notes}")

    @staticmethod
    def _check_fits(executor: Executor, kind: TaskKind, object_type: int) -> Executor:
        if kind not in executor.spec.tasks:
            raise ConfigError(f"config key 'plugin': executor {executor.spec.name!r} does not handle {kind} "
                              f"(it handles {', '.join(sorted(executor.spec.tasks))})")
        if object_type not in executor.spec.object_types:
            raise ObjectTypeError(f"executor {executor.spec.name!r} does not handle object_type {object_type}")
        return executor

    def _blocked(self) -> list[PluginInfo]:
        return [info for info in self.infos.values() if info.status == "blocked"]

    def _blocked_note(self) -> str:
        """"; blocked by $YMIR_RUNNER_DISABLE_PLUGINS: ..." when plugins are blocked, else ""."""
        blocked = self._blocked()
        return f"; blocked by {DISABLE_ENV_VAR}: {', '.join(info.label for info in blocked)}" if blocked else ""

    def _failed_matching(self, requested: str) -> PluginInfo | None:
        for info in self.infos.values():
            if info.status == "failed" and requested in {info.name, info.distribution}:
                return info
        return None

    def _describe(self, executors: Sequence[Executor]) -> str:
        if not executors:
            return "none"
        return ", ".join(f"{e.spec.name} ({self.infos[e.plugin_name].label})" for e in executors)

    # --- typed hook calls ------------------------------------------------------------------------------------

    def _only(self, plugin_name: str, hook: str) -> Callable[..., Any]:
        """A caller of ``hook`` that reaches one plugin only (pluggy's callers are untyped: the typed methods
        below are what the core calls)."""
        others = [plugin for name, plugin in self.pm.list_name_plugin() if name != plugin_name]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)

    def run_task(self, executor: Executor, context: TaskContext) -> None:
        """Call the task hook of the chosen executor's plugin only."""
        self._only(executor.plugin_name, TASK_HOOKS[context.kind])(context=context)

    def before_task(self, context: TaskContext) -> None:
        self.pm.hook.ymir_runner_before_task(context=context)

    def after_task(self, context: TaskContext) -> None:
        self.pm.hook.ymir_runner_after_task(context=context)

    def on_task_error(self, context: TaskContext, error: BaseException) -> None:
        try:
            self.pm.hook.ymir_runner_on_task_error(context=context, error=error)
        except Exception:  # never replace the task's own error
            log.exception("an on_task_error hook failed")

    def stage_saved(self, context: TaskContext, stage: Stage) -> None:
        self.pm.hook.ymir_runner_stage_saved(context=context, stage=stage)

    def add_commands(self, subparsers: argparse._SubParsersAction) -> None:
        """Let each plugin add CLI subcommands; one that fails is a warning (``run`` must still work)."""
        for impl in self.pm.hook.ymir_runner_add_commands.get_hookimpls():
            try:
                self._only(impl.plugin_name, "ymir_runner_add_commands")(subparsers=subparsers)
            except Exception as error:
                log.warning("plugin %r failed to add its commands: %s: %s", impl.plugin_name,
                            type(error).__name__, error)

    def versions(self) -> list[str]:
        """``name==version`` of every active plugin, for the run log."""
        return [f"{info.distribution or info.name}=={info.version or '?'}"
                for info in self.infos.values() if info.status == "loaded"]


def _blocked_names(blocked: Iterable[str] | None) -> set[str]:
    names = set(blocked or ())
    names.update(part.strip() for part in os.environ.get(DISABLE_ENV_VAR, "").split(",") if part.strip())
    return names


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    if sys.version_info >= (3, 10):
        return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    return list(importlib.metadata.entry_points().get(ENTRY_POINT_GROUP, []))  # pragma: no cover


def _enable_tracing(pm: pluggy.PluginManager) -> None:
    pm.trace.root.setwriter(lambda message: sys.stderr.write(f"[ymir-runner trace] {message}"))
    pm.enable_tracing()


def default_builtins() -> list[tuple[str, Any]]:
    from . import builtin

    return [("ymir_runner.builtin", builtin)]


def build_plugin_manager(*, autoload: bool = True, blocked: Iterable[str] | None = None,
                         strict: bool = False,
                         builtins: Sequence[tuple[str, Any]] | None = None) -> PluginRegistry:
    """Create the plugin registry.

    ``autoload`` loads the ``ymir_runner`` entry points; names in ``blocked`` and $YMIR_RUNNER_DISABLE_PLUGINS
    (entry-point or distribution names, comma-separated) are never imported. A plugin that fails to import
    or register is a warning (``strict`` makes it an error). ``builtins`` are ``(name, plugin)`` pairs
    registered after the entry points (default: the core's own observer, ``ymir_runner.builtin``); blocking
    applies to them too.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV_VAR):
        _enable_tracing(pm)
    registry = PluginRegistry(pm, {})
    blocked_names = _blocked_names(blocked)
    for name in blocked_names:
        pm.set_blocked(name)
    if autoload:
        for entry_point in _entry_points():
            _load_entry_point(registry, entry_point, blocked_names, strict)
    for name, plugin in default_builtins() if builtins is None else builtins:
        if name in blocked_names:
            registry.infos[name] = PluginInfo(name, "ymir-runner", __version__, status="blocked")
        else:
            registry.register(plugin, name, distribution="ymir-runner", version=__version__)
    pm.check_pending()
    return registry


def _load_entry_point(registry: PluginRegistry, entry_point: importlib.metadata.EntryPoint,
                      blocked: set[str], strict: bool) -> None:
    dist = getattr(entry_point, "dist", None)
    info = PluginInfo(entry_point.name, dist.name if dist else None, dist.version if dist else None)
    other = registry.infos.get(info.name)
    if other is not None and other.distribution == info.distribution:  # the same distribution twice on sys.path
        return
    if other is not None and other.status == "blocked":  # a blocked plugin never takes a name from a loaded one
        del registry.infos[other.name]
        other.name = f"{other.distribution}:{other.name}"
        registry.infos[other.name] = other
    elif other is not None:
        # Third parties pick names independently: load both, the later one under a name of its own.
        info.name = f"{info.distribution}:{entry_point.name}"
        log.warning("plugin name %r is declared by both %s and %s; both are loaded, the second as %r",
                    entry_point.name, other.source, info.source, info.name)
    registry.infos[info.name] = info
    if blocked.intersection({entry_point.name, info.name, info.distribution}):
        info.status = "blocked"
        return
    try:
        plugin = entry_point.load()
        registry.pm.register(plugin, name=info.name)
        registry.pm.check_pending()
    except Exception as error:
        if registry.pm.get_plugin(info.name) is not None:
            registry.pm.unregister(name=info.name)
        info.status, info.error = "failed", f"{type(error).__name__}: {error}"
        if strict:
            raise PluginLoadError(f"plugin {info.label} failed to load: {info.error}") from error
        log.warning("plugin %s failed to load and is skipped: %s", info.label, info.error)
