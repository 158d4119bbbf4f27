"""hydra-optuna-sweeper, continued: a search whose storage already holds trials picks up where it stopped.

The plugin creates the study with `load_if_exists=True` but then runs `n_trials` more and numbers the new
jobs from 0, over the folders of the finished ones. Here the finished trials (complete, pruned or failed)
count towards `n_trials`, and new jobs are numbered after every trial the study holds, so an interrupted
search rerun with the same command and `hydra.sweep.dir` ends with `n_trials` trials and loses no folder.
The sampler is reseeded for the rest: with a fixed `sampler.seed` it would otherwise draw the points of the
first trials again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

FINISHED = ("COMPLETE", "PRUNED", "FAIL")  # trial states that count towards n_trials


class ContinuedOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        impl = self.sweeper
        storage = impl.storage
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)  # before the study
        trials = _existing_trials(storage, impl.study_name)
        if trials:
            done = sum(trial.state.name in FINISHED for trial in trials)
            impl.n_trials = max(0, impl.n_trials - done)
            impl.job_idx = max(trial.number for trial in trials) + 1
            if hasattr(impl.sampler, "reseed_rng"):  # a fixed seed would draw the first trials' points again
                impl.sampler.reseed_rng()
        return super().sweep(arguments)


def _existing_trials(storage: Any, study_name: str | None) -> list[Any]:
    """The trials a stored study already holds (none for a new or in-memory study)."""
    if storage is None or study_name is None:
        return []
    import optuna  # here, not at import: Hydra imports every plugin module on each start (`--help` included)

    names = {summary.study_name for summary in optuna.get_all_study_summaries(storage)}
    return optuna.load_study(study_name=study_name, storage=storage).trials if study_name in names else []
