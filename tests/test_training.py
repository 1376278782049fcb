"""The training loop's correctness-critical pieces: optimisation, accumulation, schedule, early stopping."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from lmcraft.config import TrainConfig
from lmcraft.model.heads import Model
from lmcraft.objectives.mlm import MaskedLM
from lmcraft.tasks.classify.task import Classify, Encoded
from lmcraft.train.early_stopping import EarlyStopping
from lmcraft.train.loop import train
from lmcraft.train.optim import build_optimizer, param_groups, warmup_linear
from tests.conftest import tiny_config

SPECIAL = [0, 1, 2, 3, 4]


def classify_items(n: int = 32) -> list[Encoded]:
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        length = int(torch.randint(4, 20, (1,), generator=g))
        ids = [2, *torch.randint(5, 97, (length,), generator=g).tolist(), 3]
        items.append(Encoded(ids, None, i % 2))
    return items


def test_one_step_lowers_the_loss_on_a_fixed_batch() -> None:
    for task, items in (
        (Classify(["a", "b"], pad_id=0), classify_items()),
        (MaskedLM(special_ids=SPECIAL, mask_id=4, pad_id=0, vocab_size=97),
         [torch.randint(5, 97, (30,)).tolist() for _ in range(16)]),
    ):
        model = Model(tiny_config(), {task.head: task.head_spec()})
        batch = task.collate(items, torch.Generator().manual_seed(0))
        opt = build_optimizer(model, lr=1e-3, weight_decay=0.01)
        before = task.loss_sum(model, batch) / task.n_targets(batch)
        before.backward()
        opt.step()
        with torch.no_grad():
            after = task.loss_sum(model, batch) / task.n_targets(batch)
        assert after < before, f"{type(task).__name__}: {before:.4f} -> {after:.4f}"


def _grads(model: Model) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["classify", "mlm"])
def test_accumulated_gradients_equal_one_big_batch(kind: str) -> None:
    """4 micro-batches of 8, each loss divided by the targets of all 32, give the gradient of one batch of
    32 — also for MLM, where micro-batches hold different numbers of masked tokens."""
    if kind == "classify":
        task, items = Classify(["a", "b"], pad_id=0), classify_items(32)
    else:
        task = MaskedLM(special_ids=SPECIAL, mask_id=4, pad_id=0, vocab_size=97)
        g = torch.Generator().manual_seed(1)
        items = [torch.randint(5, 97, (int(torch.randint(8, 40, (1,), generator=g)),), generator=g).tolist()
                 for _ in range(32)]
    model = Model(tiny_config(), {task.head: task.head_spec()}).eval()
    big = task.collate(items, torch.Generator().manual_seed(5))
    # The same masking for the micro-batches: split the big batch's rows instead of re-masking.
    micro = [{k: v[i : i + 8] for k, v in big.items()} for i in range(0, 32, 8)]
    for m in micro:  # trim each micro-batch's padding to its own longest row, as collation would
        if "padding_mask" in m:
            longest = int(m["padding_mask"].sum(1).max())
            for k in list(m):
                if m[k].dim() == 2:
                    m[k] = m[k][:, :longest]
    (task.loss_sum(model, big) / task.n_targets(big)).backward()
    expected = _grads(model)
    model.zero_grad()
    total = sum(task.n_targets(m) for m in micro)
    for m in micro:
        (task.loss_sum(model, m) / total).backward()
    got = _grads(model)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5, msg=name)


def test_no_weight_decay_on_biases_and_norms() -> None:
    model = Model(tiny_config(), {"classify": {"kind": "classify", "n_labels": 2}})
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert not any(n.endswith(".bias") or "norm" in n for n in decayed)
    assert "blocks.0.ffn.up.weight" in " ".join(decayed)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_then_linear_decay() -> None:
    lrs = [warmup_linear(s, warmup=4, total=12) for s in range(13)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and lrs[8] == 0.5 and lrs[12] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))


def test_early_stopping_on_a_scripted_sequence() -> None:
    stop = EarlyStopping(patience=2, greater_is_better=True)
    script = [(100, 0.70), (200, 0.75), (300, 0.74), (400, 0.76), (500, 0.76), (600, 0.75)]
    improved = [stop.update(v, s) for s, v in script]
    assert improved == [True, True, False, True, False, False]
    assert stop.best == 0.76 and stop.best_step == 400 and stop.should_stop
    lower = EarlyStopping(patience=0, greater_is_better=False)
    assert [lower.update(v, i) for i, v in enumerate([3.0, 2.0, float("nan"), 2.5, 1.0])] == [
        True, True, False, False, True]
    assert not lower.should_stop  # patience 0 never stops


class ScriptedTask(Classify):
    """A classification task whose dev metric follows a script, to check the loop's choices."""

    def __init__(self, script: list[float]) -> None:
        super().__init__(["a", "b"], pad_id=0)
        self.script = list(script)

    def new_metrics(self):
        value = self.script.pop(0)

        class Fixed:
            def update(self, model: Model, batch: dict) -> None:
                pass

            def compute(self) -> dict[str, float]:
                return {"accuracy": value, "macro_f1": value, "loss": 1 - value}

        return Fixed()


def test_loop_keeps_the_best_checkpoint_and_stops_early(tmp_path: Path) -> None:
    task = ScriptedTask([0.60, 0.70, 0.65, 0.68, 0.69, 0.99])
    model = Model(tiny_config(), {task.head: task.head_spec()})
    saved: list[tuple[int, torch.Tensor]] = []
    steps_done = []

    def save_best(path: Path, state: dict) -> None:
        steps_done.append(path)
        saved.append(model.heads["classify"].proj.weight.detach().clone())

    cfg = TrainConfig(batch_size=4, max_steps=100, eval_every=2, patience=3, progress=False, lr=1e-3)
    result = train(model, task, classify_items(64), classify_items(8), cfg, run_dir=tmp_path, save_best=save_best)
    # evaluations at steps 2, 4, ...: best 0.70 at step 4, then 3 without improvement (6, 8, 10) → stop
    assert result.steps == 10 and result.stopped_early
    assert result.best_step == 4 and result.best_metrics["accuracy"] == 0.70
    assert len(saved) == 2 and all(p == tmp_path / "best" for p in steps_done)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert sum('"split": "dev"' in line for line in lines) == 5


class ExplodingTask(Classify):
    def loss_sum(self, model: Model, batch: dict) -> torch.Tensor:
        return super().loss_sum(model, batch) * float("nan")


def _train_32_or_4x8(tmp_path: Path, bf16: str) -> tuple[dict, dict, dict]:
    """Initial weights, and the weights after two steps of one batch of 32 and of 4 micro-batches of 8."""
    results = []
    for batch_size, accum in ((32, 1), (8, 4)):
        torch.manual_seed(0)
        task = Classify(["a", "b"], pad_id=0)
        model = Model(tiny_config(), {task.head: task.head_spec()})
        start = {k: v.clone() for k, v in model.state_dict().items()}
        cfg = TrainConfig(batch_size=batch_size, grad_accum=accum, max_steps=2, eval_every=2, progress=False,
                          tensorboard=False, lr=1e-3, warmup_ratio=0.0, bf16=bf16)
        train(model, task, classify_items(64), classify_items(8), cfg, run_dir=tmp_path / str(accum),
              save_best=lambda p, s: None)
        results.append(model.state_dict())
    return start, results[0], results[1]


def test_loop_with_4x8_accumulation_takes_the_step_of_one_batch_of_32(tmp_path: Path) -> None:
    """Through the real loop: the same examples, as 4 micro-batches of 8 or one batch of 32, give the same
    weights after two steps (dropout off). In fp32: bf16 would sum in a different order (next test)."""
    _, big, accumulated = _train_32_or_4x8(tmp_path, bf16="off")
    for name, value in big.items():
        torch.testing.assert_close(accumulated[name], value, atol=1e-6, rtol=0, msg=name)


def test_under_bf16_accumulation_moves_the_weights_almost_as_one_batch(tmp_path: Path) -> None:
    """bf16 forced on (so that CPUs without native bf16 run this path too, emulated): the gradients of 32
    and 4x8 differ by ~0.5%, so the updates agree only approximately."""
    start, big, accumulated = _train_32_or_4x8(tmp_path, bf16="on")
    moved = torch.cat([(big[k] - start[k]).flatten() for k in start])
    apart = torch.cat([(accumulated[k] - big[k]).flatten() for k in start])
    assert moved.norm() > 0
    assert apart.norm() / moved.norm() < 0.05, float(apart.norm() / moved.norm())


def test_bf16_is_detected_from_the_cpu_flags() -> None:
    from lmcraft.train.precision import cpu_has_bf16, use_bf16

    assert cpu_has_bf16("processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_has_bf16("Features : fp asimd bf16 i8mm\n")
    assert not cpu_has_bf16("flags : fpu sse avx2 fma\n")
    cpu = torch.device("cpu")
    assert use_bf16("off", cpu) is False and use_bf16("on", cpu) is True
    with pytest.raises(ValueError, match="bf16 must be one of auto, on, off"):
        use_bf16("yes", cpu)
