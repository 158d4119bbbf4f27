"""Every task a run may name: the built-in six and those a config defines (`tasks.define`).

A user's task is a `Task` subclass in the user's own package, named in config:

    tasks:
      names: [semseg, depth, curvature]
      define:
        curvature: {_target_: my_ext.tasks.Curvature}

`define_tasks(cfg)` builds and registers them before anything reads the task list (training, evaluate,
predict); a stored config's `tasks.define` passes the same trust check as its other targets. The names of
the built-in tasks are known without importing torch, so config checks stay light.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from demt_exp.data.tasks import TASK_NAMES
from demt_exp.utils.errors import ConfigError

if TYPE_CHECKING:
    from demt_exp.tasks.base import Task

_DEFINED: dict[str, Task] = {}  # the config's own tasks, by name


def known_tasks() -> tuple[str, ...]:
    """Built-in task names, then the defined ones."""
    return (*TASK_NAMES, *(name for name in _DEFINED if name not in TASK_NAMES))


def get_task(name: str) -> Task:
    """The task called `name`, failing with the known names on a typo."""
    if name in _DEFINED:
        return _DEFINED[name]
    if name in TASK_NAMES:
        from demt_exp.tasks.builtin import BUILTIN_TASKS  # torch: only where a task is used

        return next(task for task in BUILTIN_TASKS if task.name == name)
    raise KeyError(
        f"unknown task {name!r}; expected one of {', '.join(known_tasks())} "
        "(a task of your own: tasks.define.<name>, docs/extending.md)"
    )


def output_channels(names: Iterable[str], num_semseg_classes: int) -> dict[str, int]:
    """Channels the network predicts per task (SPEC 1.1 `task_channel_mapping`)."""
    return {name: get_task(name).channels(num_semseg_classes) for name in names}


def register_task(task: Task) -> None:
    """Make `task` known under its name; a definition of the same name replaces the earlier one (each run
    defines its tasks from its config), a built-in name is refused."""
    from demt_exp.tasks.base import TASK_NAME, Task

    if not isinstance(task, Task):
        raise ConfigError(f"a task must be a demt_exp.tasks.base.Task, got a {type(task).__name__}")
    if not isinstance(task.name, str) or not TASK_NAME.fullmatch(task.name):
        raise ConfigError(f"{type(task).__name__}.name={task.name!r}; expected a lower-case identifier")
    if task.name in TASK_NAMES:
        raise ConfigError(f"{type(task).__name__} is called {task.name!r}, the name of a built-in task")
    _DEFINED[task.name] = task


def define_tasks(cfg: Any) -> None:
    """Build and register the tasks of `tasks.define` ({name: {_target_: ...}}); each task's `name` must be its
    key. Nothing to do for a config without it."""
    definitions = _select(cfg, "tasks.define")
    if not definitions:
        return
    if not isinstance(definitions, Mapping):
        raise ConfigError(f"tasks.define={definitions!r}; expected a mapping {{name: {{_target_: ...}}}}")
    from hydra.utils import instantiate

    from demt_exp.tasks.base import Task

    for key, node in definitions.items():
        if not isinstance(node, Mapping) or "_target_" not in node:
            raise ConfigError(f"tasks.define.{key} has no _target_; expected the Task class that defines {key!r}")
        try:
            task = instantiate(node)
        except Exception as error:  # an import or constructor error of the user's class, as one line
            raise ConfigError(f"tasks.define.{key}: {node['_target_']} cannot be built: {error}") from None
        if not isinstance(task, Task):
            kind = type(task).__name__
            raise ConfigError(f"tasks.define.{key} builds a {kind}; a task must be a demt_exp.tasks.base.Task")
        if task.name != key:
            raise ConfigError(f"tasks.define.{key} builds {task!r}; expected a task called {key!r} (its key)")
        register_task(task)


def _select(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node
