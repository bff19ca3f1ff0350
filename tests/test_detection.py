"""What `detnas.nets.detection` adds to torchvision's detectors."""

import torch

from detnas.nets.models import build_model
from detnas.plan.config import DetectorConfig
from detnas.plan.space import Arch


def test_retinanet_never_returns_its_background_class():
    torch.manual_seed(0)
    model = build_model("detection", {"kind": "supernet", "space": "test"}, 2, "retinanet",
                        DetectorConfig(min_size=64, max_size=64, fpn_channels=16)).eval()
    logits = model.head.classification_head.cls_logits
    with torch.no_grad():  # the background logit far above the object classes, class 2 likely
        bias = logits.bias.view(-1, 3)  # (anchors, background + 2 classes)
        bias[:, 0], bias[:, 1], bias[:, 2] = 8.0, -8.0, 0.0
        logits.weight.zero_()
    with torch.no_grad(), model.backbone.body.use(Arch.parse("0-00-00-0", "test")):
        (out,) = model([torch.rand(3, 64, 64)])
    assert len(out["labels"]) > 0
    assert (out["labels"] == 2).all()


def test_anchor_size_sets_the_first_level_and_doubles():
    """`detector.anchor_size` is the side of the first level's anchors, whatever the input size
    (the default 32 is the reference's; the embedded default's 16 fits its 16-67 px objects)."""
    cfg = DetectorConfig(min_size=96, max_size=96, fpn_channels=16, anchor_size=16)
    fpn = build_model("detection", {"kind": "supernet", "space": "test"}, 2, "fpn", cfg)
    assert fpn.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,), (256,))
    retina = build_model("detection", {"kind": "supernet", "space": "test"}, 2, "retinanet", cfg)
    assert retina.anchor_generator.sizes[0] == (16, 20, 25)  # 16 * 2 ** (k / 3)
    assert retina.anchor_generator.sizes[4][0] == 256


def test_retinanet_head_norm_switch():
    """`retinanet_head_norm: gn` puts GroupNorm (4 channels a group) after each head conv; none
    (the reference) leaves the head without normalisation."""
    def norms(head_norm):
        cfg = DetectorConfig(min_size=64, max_size=64, fpn_channels=16,
                             retinanet_head_norm=head_norm)
        model = build_model("detection", {"kind": "supernet", "space": "test"}, 2, "retinanet",
                            cfg)
        return [m for m in model.head.modules() if isinstance(m, torch.nn.GroupNorm)]

    assert norms("none") == []
    gn = norms("gn")
    assert len(gn) == 8 and {m.num_groups for m in gn} == {4}  # 4 convs x 2 branches, 16 / 4
