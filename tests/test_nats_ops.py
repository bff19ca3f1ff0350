"""The searchable dilation conv, the deployed fixed layer and the derived network."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.resnet import Bottleneck

from detnas.nats.derive import arch_tag, derive, derived_backbone
from detnas.nats.ops import (
    DilationMixConv,
    arch_parameters,
    make_searchable,
    searched_layers,
)
from detnas.nets.backbones import build_backbone, describe
from detnas.nets.resnet import DilatedConv2d, ResNetBackbone
from detnas.plan.config import TrainConfig
from detnas.plan.dilations import format_dilations, parse_dilations
from detnas.run.engine import make_optimizer

CANDS = [[1, 1], [2, 2], [3, 3]]


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    net = ResNetBackbone(26, 8, **kw)
    for m in net.modules():  # non-trivial BN so that every block matters
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
    return net.eval()


def _flops(net, x):
    with FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops()


def _params(net):
    return sum(p.numel() for p in net.parameters())


def test_encoding_round_trip_and_errors():
    assert parse_dilations("1,2x1,3") == ((1, 1), (2, 1), (3, 3))
    assert format_dilations(((1, 1), (2, 1), (3, 3))) == "1,2x1,3"
    for bad in ("", "0", "1,,2", "2x", "1x2x3", "a"):
        with pytest.raises(ValueError, match="dilation encoding"):
            parse_dilations(bad)


def test_mix_conv_keeps_the_weight_and_splits_parameters():
    net = _net()
    weight = net.layer2[0].conv2.weight
    plain_keys = set(net.state_dict())
    layers = make_searchable(net, CANDS, groups=4)
    assert list(layers) == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0",
                            "layer3.1", "layer4.0", "layer4.1"]
    assert net.layer2[0].conv2.weight is weight  # the very same Parameter
    assert net.layer2[0].conv2.stride == (2, 2)
    keys = set(net.state_dict())
    assert keys - plain_keys == {f"{n}.conv2.alpha" for n in layers}
    alphas = arch_parameters(net)
    assert len(alphas) == 8 and all(a.shape == (4, 3) for a in alphas)
    sgd = make_optimizer(net, TrainConfig(), exclude=alphas)  # the search's weight optimiser
    ids = {id(p) for group in sgd.param_groups for p in group["params"]}
    assert ids.isdisjoint(map(id, alphas))
    assert len(ids) + len(alphas) == len(list(net.parameters()))
    assert searched_layers(net).keys() == layers.keys()


def test_mix_conv_is_the_softmax_mix_of_dilated_convs():
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 8, 3, 2, 1, bias=True)
    mix = DilationMixConv(conv, CANDS, groups=2)
    with torch.no_grad():
        mix.alpha.copy_(torch.randn(2, 3))
    x = torch.randn(2, 8, 9, 9)
    p = mix.alpha.softmax(-1)
    ys = [F.conv2d(x, conv.weight, conv.bias, 2, d, d) for d in (1, 2, 3)]
    expected = torch.cat([sum(p[g, k] * ys[k][:, 4 * g : 4 * g + 4] for k in range(3))
                          for g in range(2)], 1)
    torch.testing.assert_close(mix(x), expected)
    with torch.no_grad():
        mix.alpha.zero_()  # uniform mix at the start
    torch.testing.assert_close(mix(x), sum(ys) / 3)


def test_alpha_gets_gradients():
    mix = DilationMixConv(nn.Conv2d(4, 4, 3, 1, 1, bias=False), CANDS, groups=2)
    mix(torch.randn(1, 4, 8, 8)).square().sum().backward()
    assert mix.alpha.grad.shape == (2, 3) and mix.alpha.grad.abs().sum() > 0


@pytest.mark.parametrize("conv_groups,groups", [(1, 4), (4, 2), (4, 4), (2, 1)])
def test_fixed_layer_equals_search_layer_at_the_choice(conv_groups, groups):
    torch.manual_seed(2)
    conv = nn.Conv2d(8, 16, 3, 1, 1, groups=conv_groups, bias=False)
    mix = DilationMixConv(conv, CANDS + [[1, 2]], groups=groups)
    choice = torch.randint(0, 4, (groups,))
    with torch.no_grad():
        mix.alpha.copy_(F.one_hot(choice, 4) * 1e4)  # softmax is exactly one-hot in float32
    fixed = mix.fixed()
    assert fixed.weight is conv.weight
    x = torch.randn(2, 8, 11, 13)
    torch.testing.assert_close(fixed(x), mix(x), rtol=1e-5, atol=1e-5)
    # and a direct evaluation, group by group, with the plain conv at that dilation
    size = 16 // groups
    for g, k in enumerate(choice.tolist()):
        d = mix.candidates[k]
        ref = F.conv2d(x, conv.weight, None, 1, d, d, conv_groups)[:, g * size : (g + 1) * size]
        torch.testing.assert_close(fixed(x)[:, g * size : (g + 1) * size], ref,
                                   rtol=1e-5, atol=1e-5)


def test_grouping_must_align_with_cardinality():
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False)  # 4 channels per cardinal group
    with pytest.raises(ValueError, match="cardinality 4"):
        DilationMixConv(conv, CANDS, groups=8, where="layer1.0.conv2")
    with pytest.raises(ValueError, match="do not divide 16"):
        DilationMixConv(conv, CANDS, groups=3)
    with pytest.raises(ValueError, match="candidates"):
        DilationMixConv(conv, [[0, 1]], groups=2)
    with pytest.raises(ValueError, match="duplicate"):
        DilationMixConv(conv, [[1, 1], [1]], groups=2)
    net = _net()
    with pytest.raises(ValueError, match=r"layer1\.0\.conv2.*group_width 3"):
        make_searchable(net, CANDS, group_width=3)


def test_torchvision_resnext_bottleneck():
    torch.manual_seed(3)
    block = Bottleneck(32, 8, groups=4, base_width=16).eval()  # conv2: 8 -> 8, cardinality 4
    x = torch.randn(1, 32, 8, 8)
    plain = block(x)
    mix = DilationMixConv(block.conv2, CANDS, groups=2)
    block.conv2 = mix
    with torch.no_grad():
        mix.alpha.copy_(torch.tensor([[50.0, 0, 0], [50.0, 0, 0]]))
    torch.testing.assert_close(block(x), plain)  # dilation 1 everywhere = the plain block
    with pytest.raises(ValueError, match="cardinality"):
        DilationMixConv(block.conv2, CANDS, groups=8)


def test_derived_network_params_flops_weights_and_outputs():
    plain = _net()
    net = _net()
    make_searchable(net, CANDS, groups=4)
    torch.manual_seed(4)
    for m in searched_layers(net).values():
        with torch.no_grad():
            m.alpha.copy_(F.one_hot(torch.randint(0, 3, (4,)), 3) * 1e4)
    dilations = derive({k: m.alpha for k, m in searched_layers(net).items()}, CANDS)
    assert set(dilations) == set(searched_layers(net))
    assert all(len(parse_dilations(e)) == 4 for e in dilations.values())
    assert any(e != "1,1,1,1" for e in dilations.values())
    spec = {"kind": "resnet", "depth": 26, "width": 8, "dilations": dilations}
    fixed = build_backbone(spec).eval()
    assert isinstance(fixed.layer2[0].conv2, DilatedConv2d)
    # the plain network's state dict loads unchanged, with the same names and shapes
    assert {k: v.shape for k, v in fixed.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()}
    fixed.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 64, 64)
    assert _params(fixed) == _params(plain)
    assert _flops(fixed, x) == _flops(plain, x)
    assert _flops(net, x) > _flops(plain, x)  # the search network pays K convs per layer
    # the derived network computes what the search network computes at its argmax
    copy = derived_backbone(net).eval()
    assert copy.dilations == dilations
    out_search, out_fixed = net(x), copy(x)
    for key in out_search:
        torch.testing.assert_close(out_fixed[key], out_search[key], rtol=1e-4, atol=1e-4)
    assert "NATS" in describe(spec)
    assert arch_tag(dilations).startswith("layer1.0:")


def test_all_ones_derivation_is_the_plain_resnet():
    plain, net = _net(), _net()
    dilated = ResNetBackbone(26, 8, dilations={"layer3.1": "1,1,1,1"}).eval()
    dilated.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(dilated(x)["3"], plain(x)["3"])
    make_searchable(net, CANDS, groups=1)  # path-level ablation
    assert all(a.shape == (1, 3) for a in arch_parameters(net))


def test_bad_dilation_specs_name_the_field():
    with pytest.raises(ValueError, match="unknown block 'layer5.0'"):
        build_backbone({"kind": "resnet", "depth": 26, "width": 8, "dilations": {"layer5.0": "1"}})
    with pytest.raises(ValueError, match=r"layer1\.0.*'1,2,3'.*do not divide"):
        build_backbone({"kind": "resnet", "depth": 26, "width": 8,
                        "dilations": {"layer1.0": "1,2,3"}})
    with pytest.raises(ValueError, match="bad token"):
        build_backbone({"kind": "resnet", "depth": 26, "width": 8,
                        "dilations": {"layer1.0": "1,0"}})
    with pytest.raises(ValueError, match="'dilations'"):
        build_backbone({"kind": "resnet", "depth": 26, "width": 8, "dilations": ["1"]})


def test_alphas_are_made_on_the_conv_device():
    """A model already moved to a device (CUDA in bench_nats.py) gets its alphas there too."""
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False, device="meta")
    assert DilationMixConv(conv, [[1, 1], [2, 2]], 2).alpha.device.type == "meta"
