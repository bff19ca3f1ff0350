"""What `detnas.detection` adds to torchvision's detectors."""

import torch

from detnas.config import DetectorConfig
from detnas.models import build_model
from detnas.space import Arch


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
