from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset, default_collate

from detnas.nets.models import backbone_of, build_model, model_meta
from detnas.plan.config import TrainConfig
from detnas.plan.space import Arch, sample
from detnas.run import engine, tracking
from detnas.run.train import classification_loss


def _stage(paths=None, n=24):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 3, (n,),
                                                                                generator=g))
    spec = {"kind": "supernet", "space": "test"}
    torch.manual_seed(0)
    model = build_model("classification", spec, 3)
    scripted = iter(paths or [])

    def sampler(rng):
        return next(scripted) if paths else sample("test", rng)

    return engine.Stage(model, classification_loss(0.1), data, default_collate,
                        model_meta("classification", spec, 3), sampler, backbone_of(model))


def _train(stage, tcfg, tmp_path: Path, seed=0):
    return engine.train(stage, tcfg, seed, engine.Dist(), tmp_path / "resume.pt",
                        tracking.NullTracker(), {})


def test_off_path_choices_are_not_moved_by_momentum_or_weight_decay(tmp_path):
    a = Arch("test", (0, 1, 1, 1, 1, 1))
    b = Arch("test", (2, 1, 1, 1, 1, 1))  # block 0 switches from choice 0 to 2
    stage = _stage([a, b])
    tcfg = TrainConfig(steps=1, batch_size=4, lr=0.1, momentum=0.9, weight_decay=0.1)
    block0 = stage.supernet.blocks[0]
    untouched = [p.detach().clone() for p in block0[3].parameters()]
    _train(stage, tcfg, tmp_path)
    after_step1 = [p.detach().clone() for p in block0[0].parameters()]
    # second run continues the same optimizer state through resume: emulate with one more step
    tcfg2 = TrainConfig(steps=2, batch_size=4, lr=0.1, momentum=0.9, weight_decay=0.1,
                        checkpoint_every=1)
    stage = _stage([a, b])
    _train(stage, tcfg2, tmp_path / "two")
    block0 = stage.supernet.blocks[0]
    # choice 0 trained at step 1 only; at step 2 (path b) momentum must not move it
    for p, q in zip(block0[0].parameters(), after_step1, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)
    for p, q in zip(block0[3].parameters(), untouched, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)
    initial = _stage().supernet.blocks[0][2].parameters()  # same seed, same initial weights
    assert any(not torch.equal(p, q) for p, q in zip(block0[2].parameters(), initial, strict=True))


def test_resume_reaches_the_same_weights(tmp_path):
    tcfg = TrainConfig(steps=6, batch_size=4, lr=0.05, checkpoint_every=2)
    full = _train(_stage(), tcfg, tmp_path / "full")

    class Killed(Exception):
        pass

    stage = _stage()
    base = stage.loss

    calls = [0]

    def loss(model, batch):
        calls[0] += 1
        if calls[0] == 6:  # dies in step 6, after the checkpoint of step 4
            raise Killed
        return base(model, batch)

    stage.loss = loss
    with pytest.raises(Killed):
        _train(stage, tcfg, tmp_path / "part")
    assert torch.load(tmp_path / "part" / "resume.pt", weights_only=True)["step"] == 4
    resumed = _train(_stage(), tcfg, tmp_path / "part")
    assert resumed["step"] == 6
    for k, v in full["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=0, atol=0)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    stage = _stage()
    base = stage.loss

    calls = [0]

    def loss(model, batch):
        calls[0] += 1
        return base(model, batch) * (float("nan") if calls[0] == 4 else 1.0)

    stage.loss = loss
    tcfg = TrainConfig(steps=10, batch_size=4, checkpoint_every=2)
    with pytest.raises(engine.NonFiniteLoss, match="step 3"):
        _train(stage, tcfg, tmp_path)
    state = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_grouped_step_batches_hold_one_group_and_resume_exactly():
    """maskrcnn-benchmark's GroupedBatchSampler: full batches of one group in the order of the
    permutation, the groups' remainders in one mixed batch, the rest out of the epoch."""
    groups = [0] * 7 + [1] * 6  # 13 images: 7 landscape, 6 portrait; batches of 3
    s = engine.StepBatchSampler(13, 3, seed=3, start=0, stop=8, groups=groups)
    batches = list(s)
    per_epoch = 2 + 2 + (1 + 0) // 3 + 0  # 7 // 3 + 6 // 3, remainders 1 + 0: no mixed batch
    assert s._per_epoch == per_epoch == 4
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    assert all(len(b) == 3 for b in batches)
    for epoch in (0, 1):
        images = sum(batches[epoch * 4:(epoch + 1) * 4], [])
        assert len(set(images)) == 12  # one landscape image sits this epoch out
        order = s._permutation(epoch)
        firsts = [order.index(b[0]) for b in batches[epoch * 4:(epoch + 1) * 4]]
        assert firsts == sorted(firsts)  # the batches follow the permutation
    assert batches[5] == engine.StepBatchSampler(13, 3, 3, 5, 8, groups=groups).indices(5)
    ranks = [engine.StepBatchSampler(13, 3, 3, 0, 8, rank=r, world=3, groups=groups).indices(6)
             for r in range(3)]
    assert sorted(sum(ranks, [])) == sorted(batches[6])
    mixed = engine.StepBatchSampler(10, 4, 0, 0, 2, groups=[0] * 5 + [1] * 5)
    assert mixed._per_epoch == 2 and len({i >= 5 for i in mixed.indices(0)}) == 1
    remainders = engine.StepBatchSampler(10, 3, 0, 0, 3, groups=[0] * 5 + [1] * 5)
    assert remainders._per_epoch == 3  # 1 + 1 full, the remainders 2 + 2 make one mixed batch
    assert sorted(len({i >= 5 for i in remainders.indices(k)}) for k in range(3)) == [1, 1, 2]
    with pytest.raises(ValueError, match="only 2 images"):
        engine.StepBatchSampler(2, 3, 0, 0, 1, groups=[0, 1])


def test_step_batches_are_a_function_of_the_step():
    s = engine.StepBatchSampler(10, 4, seed=3, start=0, stop=6)
    batches = list(s)
    assert batches[2] == engine.StepBatchSampler(10, 4, seed=3, start=2, stop=6).indices(2)
    first_epoch = sum(batches, [])[:10]
    assert sorted(first_epoch) == list(range(10))  # every sample once per epoch
    ranks = [engine.StepBatchSampler(10, 4, 3, 0, 6, rank=r, world=2).indices(1) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(batches[1])


def test_lr_schedules():
    lin = TrainConfig(steps=100, schedule="linear", warmup_steps=10)
    assert engine.lr_factor(0, lin) == pytest.approx(1 / 3)  # maskrcnn-benchmark's WARMUP_FACTOR
    assert engine.lr_factor(5, lin) == pytest.approx((1 / 3 + 1) / 2 * 0.95)
    assert engine.lr_factor(50, lin) == pytest.approx(0.5)
    step = TrainConfig(steps=90, schedule="step", lr_steps=[2 / 3, 8 / 9], gamma=0.1)
    assert [engine.lr_factor(s, step) for s in (0, 59, 60, 80)] == pytest.approx(
        [1, 1, 0.1, 0.01])


def test_no_weight_decay_on_bn_and_bias():
    model = build_model("classification", {"kind": "supernet", "space": "test"}, 3)
    opt = engine.make_optimizer(model, TrainConfig(weight_decay=0.5))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.5 and no_decay["weight_decay"] == 0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
