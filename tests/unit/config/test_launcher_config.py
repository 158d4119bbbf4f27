"""The launcher options compose on top of hydra-submitit-launcher and instantiate its launchers;
the process-group variables come out right for torchrun, SLURM job steps and submitit's local executor."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from demt_exp.config.compose import CONF_DIR
from demt_exp.engine.launch_env import first_host, launcher_environment


def launcher_config(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    return cfg.hydra.launcher


def test_slurm_launcher_has_the_defaults_a_gpu_cluster_needs() -> None:
    launcher = launcher_config("hydra/launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4")
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.tasks_per_node == 4 and launcher.nodes == 2  # one DDP process per GPU
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s >= 60
    for key in (
        "partition",
        "account",
        "qos",
        "timeout_min",
        "mem_gb",
        "cpus_per_task",
        "setup",
        "additional_parameters",
    ):
        assert key in launcher
    built = instantiate(OmegaConf.to_container(launcher, resolve=False) | {"submitit_folder": "/tmp/x", "name": "job"})
    assert type(built).__name__ == "SlurmLauncher" and built.params["tasks_per_node"] == 4


def test_local_launcher_instantiates_submitits_local_executor() -> None:
    launcher = launcher_config("hydra/launcher=local")
    assert launcher._target_.endswith("LocalLauncher")
    assert (
        type(
            instantiate(OmegaConf.to_container(launcher, resolve=False) | {"submitit_folder": "/tmp/x", "name": "job"})
        ).__name__
        == "LocalLauncher"
    )


@pytest.mark.parametrize(
    "nodelist,host", [("vm", "vm"), ("gpu[07-09,12]", "gpu07"), ("a1,b2", "a1"), ("node[3],gpu[1-2]", "node3")]
)
def test_first_host_of_a_node_list(nodelist: str, host: str) -> None:
    assert first_host(nodelist) == host


def test_process_group_variables_from_each_launcher() -> None:
    srun_task = {
        "SLURM_PROCID": "3",
        "SLURM_STEP_NUM_TASKS": "16",
        "SLURM_LOCALID": "3",
        "SLURM_JOB_ID": "1234",
        "SLURM_STEP_NODELIST": "gpu[07-08]",
    }
    assert launcher_environment(srun_task) == {
        "RANK": "3",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "3",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(20000 + 1234),
    }
    batch_script = {"SLURM_PROCID": "0", "SLURM_NTASKS": "16", "SLURM_JOB_ID": "1234"}  # no job step: one process
    assert launcher_environment(batch_script) == {}
    assert launcher_environment({**srun_task, "RANK": "0", "WORLD_SIZE": "2"}) == {}  # torchrun inside SLURM wins
    local = {
        "SUBMITIT_LOCAL_NTASKS": "2",
        "SUBMITIT_LOCAL_GLOBALID": "1",
        "SUBMITIT_LOCAL_LOCALID": "1",
        "SUBMITIT_LOCAL_JOB_ID": "777",
    }
    assert launcher_environment(local)["RANK"] == "1" and launcher_environment(local)["MASTER_ADDR"] == "127.0.0.1"
