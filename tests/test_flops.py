import random

import pytest
import torch

from detnas.nets.supernet import Backbone, Classifier
from detnas.plan import flops
from detnas.plan.space import REGISTRY, SPACES, get_space, resolve, sample


@pytest.mark.parametrize("space", list(SPACES))
def test_table_equals_the_flop_counter_on_real_modules(space):
    arch = sample(space, random.Random(1))
    size = 64 if space == "test" else 96
    table = flops.cost_table(space, size, num_classes=10)
    backbone = Backbone(arch)
    assert flops.count(backbone, size) == table.backbone(arch)
    assert flops.count(Classifier(Backbone(arch), 10), size) == table.classifier(arch)


def test_every_registered_arch_builds_with_its_table_params():
    for named in REGISTRY.values():
        net = Classifier(Backbone(named.arch), 1000)
        assert sum(p.numel() for p in net.parameters()) == flops.summary(named.arch)[
            "classifier_params"], named.name


def _shufflenet_params(space: str) -> int:
    """Independent closed form for an all-3x3 ShuffleNetV2 backbone (conv weights + BN affine)."""
    sp = get_space(space)
    total = 3 * sp.first_channels * 9 + 2 * sp.first_channels
    cin = sp.first_channels
    for n, c in zip(sp.stage_blocks, sp.stage_channels, strict=True):
        mid = c // 2
        # stride 2: main 1x1 cin->mid, 3x3 dw, 1x1 mid->(c-cin); proj 3x3 dw on cin, 1x1 cin->cin
        total += cin * mid + 9 * mid + mid * (c - cin) + 2 * (2 * mid + (c - cin))
        total += 9 * cin + cin * cin + 2 * 2 * cin
        # stride 1: main on c/2 channels: 1x1, 3x3 dw, 1x1, three BNs of c/2
        total += (n - 1) * (2 * (c // 2) * mid + 9 * mid + 3 * 2 * mid)
        cin = c
    return total


@pytest.mark.parametrize("name", ["ShuffleNetV2-20", "ShuffleNetV2-40", "ShuffleNetV2-40-3.8G"])
def test_params_match_independent_arithmetic(name):
    arch = resolve(name)
    assert flops.summary(arch)["backbone_params"] == _shufflenet_params(arch.space)


def test_flops_of_the_spaces_are_in_the_papers_range():
    assert 250e6 < flops.backbone_flops(resolve("ShuffleNetV2-20")) < 300e6
    assert 1.2e9 < flops.backbone_flops(resolve("DetNASNet")) < 1.4e9
    assert 3.6e9 < flops.backbone_flops(resolve("DetNASNet-3.8G")) < 4.0e9


def test_count_leaves_module_mode_alone():
    net = Backbone(resolve("ShuffleNetV2-tiny"))
    net.train()
    before = [m.running_mean.clone() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    flops.count(net, 64)
    after = [m.running_mean for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert net.training and all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
