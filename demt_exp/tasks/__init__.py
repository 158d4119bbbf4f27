"""Dense tasks: the `Task` contract (base), the six of the papers (builtin) and the registry a config's own
tasks join (`tasks.define`)."""

from demt_exp.tasks.registry import define_tasks, get_task, known_tasks, output_channels, register_task

__all__ = ["define_tasks", "get_task", "known_tasks", "output_channels", "register_task"]
