"""Loss-weighting strategies against their papers' formulas, computed here with NumPy on a toy
problem whose per-task gradients are known: L_t = a_t . theta + k_t h_t, so dL_t/dtheta = a_t
(theta shared) and dL_t/dh_t = k_t (h_t task-specific). (Learned weights in real training runs:
integration/test_weighting_training.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from commands import TINY_RUN
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import default_collate

from demt_exp.engine.optim import build_optimizer, build_poly_scheduler
from demt_exp.engine.rng import seed_everything
from demt_exp.engine.step import train_step
from demt_exp.losses.task_losses import build_loss
from demt_exp.models.model import build_model
from demt_exp.weighting import (
    DWAWeighting,
    FixedWeighting,
    GradNormWeighting,
    PCGradWeighting,
    UncertaintyWeighting,
    build_weighting,
)
from demt_exp.weighting.pcgrad import project_conflicts

TASKS = ["semseg", "depth"]
A = np.array([[1.0, 2.0, 0.0], [-3.0, 0.5, 1.0]])  # dL_t / dtheta, conflicting: a0 . a1 = -2
K = np.array([0.7, -1.3])  # dL_t / dh_t
OFFSET = np.array([6.0, 4.0])  # keeps the losses positive (GradNorm divides by L(0))


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Parameter(torch.tensor([0.1, -0.2, 0.3]))
        self.heads = nn.ParameterDict({t: nn.Parameter(torch.tensor(0.5)) for t in TASKS})

    def losses(self) -> dict[str, torch.Tensor]:
        a = torch.tensor(A, dtype=torch.float32)
        return {t: a[i] @ self.shared + float(K[i]) * self.heads[t] + float(OFFSET[i]) for i, t in enumerate(TASKS)}

    def values(self) -> np.ndarray:
        theta = self.shared.detach().double().numpy()
        h = np.array([float(self.heads[t].detach()) for t in TASKS])
        return A @ theta + K * h + OFFSET


def grads(model: Toy) -> tuple[np.ndarray, np.ndarray]:
    return model.shared.grad.double().numpy(), np.array([float(model.heads[t].grad) for t in TASKS])


def test_fixed_is_bit_identical_to_the_official_loss_and_step(compose) -> None:
    cfg = compose([*TINY_RUN, "tasks=nyud", "dataset.num_semseg_classes=5", "dataset.train.num_samples=4"])
    assert cfg.weighting._target_.endswith("FixedWeighting")  # the default
    loss_fn = build_loss(cfg.tasks)
    batch = default_collate([instantiate(cfg.dataset.train)[i] for i in range(2)])
    params = []
    seed_everything(0)  # the loop as it was: one backward of MultiTaskLoss's total
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg.optimizer, model)
    official, _ = loss_fn(model(batch["image"]), batch)
    official.backward()
    optimizer.step()
    params.append([p.detach().clone() for p in model.parameters()])
    seed_everything(0)  # the loop now, with the default strategy
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg.optimizer, model)
    strategy = build_weighting(cfg.weighting, cfg.tasks.names, loss_fn.weights)
    result = train_step(
        model,
        batch,
        loss_fn,
        optimizer,
        build_poly_scheduler(optimizer, 10),
        lambda: torch.autocast("cpu", enabled=False),
        None,
        weighting=strategy,
    )
    params.append([p.detach().clone() for p in model.parameters()])
    assert torch.equal(result.loss, official.detach())
    assert strategy.weights() == dict(cfg.tasks.loss.weights)
    assert all(torch.equal(a, b) for a, b in zip(*params))


def test_uncertainty_follows_kendall_regression_and_classification_forms() -> None:
    model = Toy()
    strategy = UncertaintyWeighting(TASKS, {"semseg": 1.0, "depth": 1.0})
    s = np.array([0.3, -0.2])
    with torch.no_grad():
        strategy.log_vars.copy_(torch.tensor(s))
    total = strategy.backward(model.losses(), model)
    L = model.values()
    sigma2 = np.exp(s)
    # semseg is classification: 1/sigma^2 L + log sigma; depth regression: 1/(2 sigma^2) L + log sigma
    coefficient = np.array([1 / sigma2[0], 1 / (2 * sigma2[1])])
    expected_total = (coefficient * L).sum() + np.log(np.sqrt(sigma2)).sum()
    assert float(total) == pytest.approx(expected_total, rel=1e-6)
    shared, heads = grads(model)
    np.testing.assert_allclose(shared, coefficient @ A, rtol=1e-6)
    np.testing.assert_allclose(heads, coefficient * K, rtol=1e-6)
    np.testing.assert_allclose(strategy.log_vars.grad.numpy(), -coefficient * L + 0.5, rtol=1e-6)
    np.testing.assert_allclose(list(strategy.weights().values()), coefficient, rtol=1e-12)
    group = strategy.param_group(0.01)
    assert group["weight_decay"] == 0.0 and group["params"][0] is strategy.log_vars


def test_dwa_weights_from_the_previous_two_windows() -> None:
    strategy = DWAWeighting(TASKS, {"semseg": 1.0, "depth": 2.0}, temperature=2.0, window=2)
    rng = np.random.default_rng(0)
    history = rng.uniform(0.5, 3.0, size=(8, 2))  # unweighted losses of 8 steps
    for step, values in enumerate(history):
        terms = values * np.array([1.0, 2.0])  # use_task_weights: DWA runs on lambda_t L_t
        windows = [history[j * 2 : (j + 1) * 2].mean(0) * np.array([1.0, 2.0]) for j in range(step // 2)]
        if len(windows) < 2:
            lam = np.ones(2)
        else:
            w = windows[-1] / windows[-2]
            lam = 2 * np.exp(w / 2) / np.exp(w / 2).sum()
        losses = {t: torch.tensor(v, dtype=torch.float32, requires_grad=True) for t, v in zip(TASKS, values)}
        total = strategy.combine(losses)
        assert float(total.detach()) == pytest.approx((lam * terms).sum(), rel=1e-6), step
    assert not np.allclose(lam, 1.0)  # the last windows really reweighted


def test_gradnorm_weight_gradient_and_renormalisation() -> None:
    model = Toy()
    strategy = GradNormWeighting(TASKS, {"semseg": 1.0, "depth": 1.0}, alpha=1.5, layer="shared")
    alpha = 1.5

    def expected_weight_grad(w: np.ndarray, L: np.ndarray, L0: np.ndarray) -> np.ndarray:
        G = w * np.linalg.norm(A, axis=1)
        r = (L / L0) / (L / L0).mean()
        return np.sign(G - G.mean() * r**alpha) * np.linalg.norm(A, axis=1)

    L0 = model.values()
    strategy.backward(model.losses(), model)
    shared, heads = grads(model)
    np.testing.assert_allclose(shared, A.sum(0), rtol=1e-6)  # network: sum_i w_i grad L_i, w = 1
    np.testing.assert_allclose(heads, K, rtol=1e-6)
    np.testing.assert_allclose(strategy.task_weights.grad.numpy(), expected_weight_grad(np.ones(2), L0, L0))
    # a later step: other losses (so r_i != 1) and other weights
    with torch.no_grad():
        model.shared.add_(torch.tensor([0.5, -0.4, 0.9]))
        strategy.task_weights.copy_(torch.tensor([1.4, 0.6]))
    model.zero_grad()
    strategy.task_weights.grad = None
    strategy.backward(model.losses(), model)
    np.testing.assert_allclose(
        strategy.task_weights.grad.numpy(), expected_weight_grad(np.array([1.4, 0.6]), model.values(), L0), rtol=1e-6
    )
    np.testing.assert_allclose(grads(model)[0], np.array([1.4, 0.6]) @ A, rtol=1e-6)
    with torch.no_grad():
        strategy.task_weights.copy_(torch.tensor([3.0, 1.0]))
    strategy.after_step()
    np.testing.assert_allclose(strategy.task_weights.detach().numpy(), [1.5, 0.5])


def test_gradnorm_names_a_missing_layer() -> None:
    with pytest.raises(ValueError, match="weighting.layer='encoder.projection'.*shared"):
        GradNormWeighting(TASKS, {"semseg": 1.0, "depth": 1.0}).backward(Toy().losses(), Toy())


@pytest.mark.parametrize("conflict", [True, False])
def test_pcgrad_projects_conflicting_shared_gradients_only(conflict: bool) -> None:
    model = Toy()
    scale = np.array([2.0, 0.5])
    strategy = PCGradWeighting(TASKS, {"semseg": 2.0, "depth": 0.5})
    losses = model.losses()
    if not conflict:  # flip the second task's shared gradient: a0 . a1 > 0
        losses["depth"] = losses["depth"] - 2 * (torch.tensor(A[1], dtype=torch.float32) @ model.shared)
    total = strategy.backward(losses, model)
    g = scale[:, None] * (A if conflict else A * np.array([[1.0], [-1.0]]))
    if conflict:
        g0 = g[0] - (g[0] @ g[1]) / (g[1] @ g[1]) * g[1]
        g1 = g[1] - (g[1] @ g[0]) / (g[0] @ g[0]) * g[0]
        expected = g0 + g1
        assert g[0] @ g[1] < 0
    else:
        expected = g[0] + g[1]
    shared, heads = grads(model)
    np.testing.assert_allclose(shared, expected, rtol=1e-6)
    np.testing.assert_allclose(heads, scale * K, rtol=1e-6)  # task-specific: untouched
    assert float(total) == pytest.approx(float(sum(scale[i] * losses[t].detach() for i, t in enumerate(TASKS))))


def sequential_surgery(g: np.ndarray, orders: list[list[int]]) -> np.ndarray:
    """PCGrad as the paper writes it: each g_i projected in turn against the original g_j it conflicts with."""
    projected = g.copy()
    for i, order in enumerate(orders):
        for j in order:
            dot = projected[i] @ g[j]
            if dot < 0:
                projected[i] = projected[i] - dot / (g[j] @ g[j]) * g[j]
    return projected


def test_pcgrad_gram_form_equals_the_sequential_projection_for_many_tasks() -> None:
    rng = np.random.default_rng(3)
    g = rng.normal(size=(5, 40))
    g[1] = -0.8 * g[0] + 0.3 * rng.normal(size=40)  # strong conflicts, so several projections chain
    g[3] = -g[2] + 0.1 * rng.normal(size=40)
    orders = [[j for j in rng.permutation(5).tolist() if j != i] for i in range(5)]
    expected = sequential_surgery(g, orders)
    assert sum((expected[i] != g[i]).any() for i in range(5)) >= 3  # the case really projects
    got = project_conflicts(torch.from_numpy(g), orders).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_fixed_strategy_matches_config_group_defaults(compose) -> None:
    for name, cls in [
        ("fixed", FixedWeighting),
        ("uncertainty", UncertaintyWeighting),
        ("dwa", DWAWeighting),
        ("gradnorm", GradNormWeighting),
        ("pcgrad", PCGradWeighting),
    ]:
        cfg = compose([f"weighting={name}", "tasks=nyud"])
        strategy = build_weighting(cfg.weighting, cfg.tasks.names, cfg.tasks.loss.weights)
        assert type(strategy) is cls
    assert compose(["weighting=dwa"]).weighting.temperature == 2.0
    assert compose(["weighting=gradnorm"]).weighting.alpha == 1.5


def test_sweep_weighting_is_a_multirun_over_every_method_on_one_preset() -> None:
    from hydra import compose, initialize_config_dir

    from demt_exp.config.compose import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["+sweep=weighting"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.runtime.choices.experiment == "demt_nyud_swin_t"
    methods = str(cfg.hydra.sweeper.params.weighting).split(",")
    assert methods == ["fixed", "uncertainty", "dwa", "gradnorm", "pcgrad"]
    assert sorted(methods) == sorted(p.stem for p in (Path(CONF_DIR) / "weighting").glob("*.yaml"))
