"""Stored configs carry values, never choices of code.

A training checkpoint stores the resolved config of its run; `evaluate`, `predict` and resuming
read it back, and the first two rebuild the model from it with Hydra's `instantiate`, which
imports and calls whatever a `_target_` names. Hydra's blocklist stops `os.system` and
`subprocess`, not `torch.load(weights_only=False)` or `builtins.exec`, so a checkpoint that is
safe to unpickle could still run code from a second file of the same download. Therefore:

- every `_target_` of a stored config must be one the project ships (`conf/`, `sweeps/`), one of
  a config folder the user named on the command line (`hydra.searchpath`), or one of the config
  the command line composed: the user typed those; Hydra's other instantiation keys (`_args_`,
  `_partial_`, ...) only on such a node;
- no stored value may hold an interpolation (`${...}`): stored configs are saved resolved, so one
  there was not written by a run, and resolving it would call a resolver the file chose.

A refusal names the file, the dotted key and the value, in one line.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from demt_exp.config.compose import CONF_DIR, SWEEPS_DIR
from demt_exp.utils.errors import ConfigError

TARGET = "_target_"
# The keys Hydra's instantiate reads besides `_target_`; they belong on a node with an allowed target.
INSTANTIATE_KEYS = ("_args_", "_partial_", "_recursive_", "_convert_")
SHOWN_CHARS = 80


class StoredConfigError(ConfigError):
    """A config read from a file names code, or holds an interpolation."""


def _nodes(tree: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every node of a plain tree (mappings, lists, leaves) with its dotted key, the root first."""
    yield key, tree
    if isinstance(tree, Mapping):
        for name, value in tree.items():
            yield from _nodes(value, f"{key}.{name}" if key else str(name))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from _nodes(value, f"{key}[{index}]")


def _plain(tree: Any) -> Any:
    """A DictConfig as plain containers, interpolations left unresolved (nothing is called)."""
    return OmegaConf.to_container(tree, resolve=False) if isinstance(tree, (DictConfig, ListConfig)) else tree


def targets(tree: Any) -> set[str]:
    """The `_target_` strings anywhere in a config tree (plain or DictConfig)."""
    return {
        node[TARGET]
        for _, node in _nodes(_plain(tree))
        if isinstance(node, Mapping) and isinstance(node.get(TARGET), str)
    }


def folder_targets(folders: Iterable[str | Path]) -> frozenset[str]:
    """Every `_target_` of the YAML files under `folders`, read as plain YAML (no Hydra, no resolvers)."""
    files = [path for folder in folders for path in sorted(Path(folder).rglob("*.yaml"))]
    return frozenset(target for path in files for target in targets(yaml.safe_load(path.read_text())))


@functools.cache
def shipped_targets() -> frozenset[str]:
    """Every `_target_` of the project's own config tree: what a checkpoint of ours can name. Read once."""
    return folder_targets([CONF_DIR, SWEEPS_DIR])


def _folder(entry: str) -> Path | None:
    """A search path entry (`file://DIR`, `pkg://package`, or a bare folder) as a folder, if it is one."""
    if entry.startswith("pkg://"):
        spec = importlib.util.find_spec(entry.removeprefix("pkg://").replace("/", "."))
        locations = list(spec.submodule_search_locations or []) if spec else []
        return Path(locations[0]) if locations else None
    folder = Path(entry.removeprefix("file://"))
    return folder if folder.is_dir() else None


def searchpath_folders(overrides: Sequence[str]) -> list[Path]:
    """The config folders a command line adds with `hydra.searchpath=[...]`."""
    wanted = [o for o in overrides if o.lstrip("+~").startswith("hydra.searchpath")]
    entries = [str(e) for o in OverridesParser.create().parse_overrides(wanted) for e in (o.value() or [])]
    return [folder for folder in map(_folder, entries) if folder is not None]


def trusted_targets(composed: Any = None, overrides: Sequence[str] = ()) -> frozenset[str]:
    """The targets a stored config may name: the shipped ones, those of the user's config folders
    (`hydra.searchpath` in `overrides`) and those of `composed`, the config the command line gave."""
    own = targets(composed) if composed is not None else set()
    return shipped_targets() | folder_targets(searchpath_folders(overrides)) | own


def _printable(key: str) -> str:
    """A dotted key as one printable line (keys come from the file too)."""
    return key if key.isprintable() else repr(key)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _refuse_node(node: Mapping[str, Any], key: str, source: str | Path, allowed: Set[str]) -> None:
    """A mapping whose target (or target-less instantiation keys) would choose code."""
    where = f"{_printable(key)}." if key else ""
    if TARGET in node:
        target = node[TARGET]
        if not isinstance(target, str) or target not in allowed:
            raise StoredConfigError(
                f"{source}: stored config key {where}{TARGET} names {_shown(target)}, which is not a target of "
                "this project's configs or of the command line; a file carries values, never choices of code "
                "(a target of your own config folder is accepted when the command line names the folder: "
                "hydra.searchpath=[file://DIR])"
            )
        return
    special = next((name for name in INSTANTIATE_KEYS if name in node), None)
    if special is not None:
        raise StoredConfigError(
            f"{source}: stored config key {where}{special} belongs to no {TARGET}; "
            f"a file carries values, never choices of code"
        )


def check_stored_config(stored: Mapping[str, Any], source: str | Path, allowed: Set[str]) -> None:
    """Raise StoredConfigError, naming `source` and the dotted key, for any target outside `allowed` and
    any interpolation in `stored`; call it before anything of `stored` is merged, composed or compared."""
    for key, node in _nodes(_plain(stored)):
        if isinstance(node, str) and "${" in node:
            raise StoredConfigError(
                f"{source}: stored config key {_printable(key)} holds the interpolation {_shown(node)}; stored "
                "configs are saved resolved, so it was not written by a run, and resolving it could call any resolver"
            )
        if isinstance(node, Mapping):
            _refuse_node(node, key, source, allowed)


def check_checkpoint_config(
    stored: Mapping[str, Any], checkpoint: str | Path, composed: Any = None, overrides: Sequence[str] = ()
) -> None:
    """`check_stored_config` for a checkpoint's config, against `trusted_targets(composed, overrides)`:
    `composed` is the config the current command line composed, `overrides` that command line."""
    check_stored_config(stored, f"checkpoint {checkpoint}", trusted_targets(composed, overrides))
