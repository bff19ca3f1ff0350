import random

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detnas.nets.supernet import Backbone, Classifier, Supernet
from detnas.plan.space import SPACES, get_space, sample


def _randomise_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("space", list(SPACES))
def test_extracted_network_equals_supernet_path(space):
    torch.manual_seed(0)
    supernet = Supernet(space)
    _randomise_bn(supernet)
    supernet.eval()
    x = torch.randn(2, 3, 64, 64)
    for seed in range(2):
        arch = sample(space, random.Random(seed))
        with torch.no_grad(), supernet.use(arch):
            expected = supernet(x)
        net = supernet.extract(arch).eval()
        with torch.no_grad():
            got = net(x)
        assert list(got) == ["0", "1", "2", "3"]
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)


def test_stage_outputs_follow_the_contract():
    sp = get_space("test")
    net = Backbone(sample("test", random.Random(0)))
    out = net(torch.randn(1, 3, 64, 64))
    assert [v.shape[1] for v in out.values()] == list(sp.stage_channels)
    assert [v.shape[-1] for v in out.values()] == [16, 8, 4, 2]  # strides 4..32
    assert net.out_channels == sp.stage_channels[-1]


def test_paths_differ_and_a_path_is_required():
    supernet = Supernet("test").eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(RuntimeError, match="no path"):
        supernet(x)
    a, b = sample("test", random.Random(0)), sample("test", random.Random(1))
    with torch.no_grad():
        with supernet.use(a):
            ya = supernet(x)["3"]
        with supernet.use(b):
            yb = supernet(x)["3"]
    assert not torch.equal(ya, yb)
    assert supernet.path is None  # use() restores the previous path
    with pytest.raises(ValueError, match="space 300M"):
        supernet.set_path(sample("300M", random.Random(0)))


def test_classifier_extract_matches():
    torch.manual_seed(0)
    model = Classifier(Supernet("test"), 7).eval()
    arch = sample("test", random.Random(5))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad(), model.backbone.use(arch):
        expected = model(x)
    got = model.extract(arch).eval()(x)
    assert got.shape == (3, 7)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_norm_layer_is_injectable():
    arch = sample("test", random.Random(0))
    net = Backbone(arch, norm_layer=FrozenBatchNorm2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in net.modules())
    sync = nn.SyncBatchNorm.convert_sync_batchnorm(Supernet("test"))
    assert any(isinstance(m, nn.SyncBatchNorm) for m in sync.modules())


def test_path_parameters_are_those_the_path_uses():
    supernet = Supernet("test")
    arch = sample("test", random.Random(0))
    with supernet.use(arch):
        supernet(torch.randn(2, 3, 32, 32))["3"].sum().backward()
    used = {id(p) for p in supernet.parameters() if p.grad is not None}
    assert used == {id(p) for p in supernet.path_parameters(arch)}
