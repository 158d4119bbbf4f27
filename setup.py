"""Packaging beyond what pyproject.toml can say: the top-level `conf/` and `sweeps/` folders (the
layout users see and edit) go into the wheel as `demt_exp/conf` and `demt_exp/sweeps`, where
`demt_exp/config/compose.py` finds them when no source checkout is around; the Hydra plugin
`hydra_plugins/demt_exp_search` (the continued Optuna sweeper) goes in under Hydra's plugin namespace."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["demt_exp", "demt_exp.*"]),
        "demt_exp.conf",
        "demt_exp.sweeps",
        "hydra_plugins.demt_exp_search",
    ],
    package_dir={"demt_exp.conf": "conf", "demt_exp.sweeps": "sweeps"},
    package_data={"demt_exp.conf": ["**/*.yaml"], "demt_exp.sweeps": ["**/*.yaml", "README.md"]},
)
