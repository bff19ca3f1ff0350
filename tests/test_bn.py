import pytest
import torch
from torch import nn

from detnas.nets.bn import ImageRegions, recalibrated
from detnas.nets.supernet import Supernet
from detnas.plan.space import Arch


def _toy():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    net = nn.Sequential(conv, nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
    net[1].running_mean.fill_(5.0)  # stale statistics that must not survive
    net[1].running_var.fill_(7.0)
    return net.eval()


def test_statistics_are_the_exact_dataset_mean_and_variance():
    net = _toy()
    images = torch.randn(10, 3, 6, 5) * 3 + 1
    batches = [images[:3], images[3:8], images[8:]]  # unequal batches; the last one is cut
    with torch.no_grad():
        features = net[0](images[:9])  # what the first BN sees: (9, 4, 6, 5)
    mean = features.mean((0, 2, 3))
    var = features.transpose(0, 1).reshape(4, -1).var(1)  # unbiased, over all 9 images
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with recalibrated(net, batches, num_images=9) as same:
        assert same is net
        assert not net.training and not net[1].training  # evaluation mode is back inside
        torch.testing.assert_close(net[1].running_mean, mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net[1].running_var, var, rtol=1e-5, atol=1e-5)
        assert net[1].momentum == 0.1
        assert not torch.equal(net[4].running_var, before["4.running_var"])
    for key, value in net.state_dict().items():  # every buffer restored, no weight moved
        assert torch.equal(value, before[key]), key


def test_per_batch_average_would_differ():
    """The toy case discriminates: torch's cumulative average of batch variances is not exact."""
    net = _toy()
    images = torch.randn(10, 3, 6, 5) * 3 + 1
    net[1].momentum = None
    net.train()
    with torch.no_grad():
        for batch in (images[:2], images[2:]):
            net(batch)
        exact = net[0](images).transpose(0, 1).reshape(4, -1).var(1)
    assert not torch.allclose(net[1].running_var, exact, rtol=1e-3)


def test_restores_after_an_error_and_rejects_empty_input():
    net = _toy()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"), recalibrated(net, [torch.randn(2, 3, 4, 4)], 2):
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="no images"), recalibrated(net, [], 4):
        pass
    with pytest.raises(ValueError, match="num_images"), recalibrated(net, [], 0):
        pass
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not net.training and net[1].momentum == 0.1


def test_only_the_path_changes_and_candidates_do_not_leak():
    torch.manual_seed(0)
    net = Supernet("test").eval()
    a, b = Arch.parse("0-12-30-2", "test"), Arch.parse("1-03-21-3", "test")
    images = torch.rand(4, 3, 32, 32)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with net.use(a), recalibrated(net, [images[:2], images[2:]], 4):
        changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
        out_a = net(images)["3"]
    assert changed, "the path's statistics were not recomputed"
    assert all(k.startswith("stem.") or k.split(".")[2] == str(a.choices[int(k.split(".")[1])])
               for k in changed), changed
    assert not any(k.endswith(("weight", "bias")) for k in changed)
    with net.use(b), recalibrated(net, [images], 4):
        net(images)
    with net.use(a), recalibrated(net, [images[:2], images[2:]], 4):
        torch.testing.assert_close(net(images)["3"], out_a, rtol=0, atol=0)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_momentum_switch_gives_the_reference_running_average():
    """The reference's recalibration: reset buffers, then a momentum-0.1 average of batches."""
    net = _toy()
    images = torch.randn(12, 3, 6, 5) * 3 + 1
    batches = [images[:4], images[4:8], images[8:]]
    mean, var = torch.zeros(4), torch.ones(4)  # reset_running_stats
    with torch.no_grad():
        for b in batches:
            f = net[0](b)
            mean = 0.9 * mean + 0.1 * f.mean((0, 2, 3))
            var = 0.9 * var + 0.1 * f.transpose(0, 1).reshape(4, -1).var(1)
    with recalibrated(net, batches, num_images=12, momentum=0.1):
        torch.testing.assert_close(net[1].running_mean, mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net[1].running_var, var, rtol=1e-5, atol=1e-5)
    assert net[1].running_mean.eq(5.0).all()  # restored


def _padded_pair():
    """A strided toy net, and a landscape and a portrait image padded into one 12 x 12 batch."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 2, 3, stride=2, padding=1), nn.BatchNorm2d(2)).eval()
    images = [torch.randn(3, 7, 10) * 3 + 1, torch.randn(3, 12, 5) + 2]
    batch = torch.zeros(2, 3, 12, 12)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[1], : im.shape[2]] = im
    regions = ImageRegions(net)

    def forward(b):
        regions.set([im.shape[1:] for im in images], b.shape[-2:])
        net(b)

    return net, images, batch, regions, forward


def test_image_regions_keep_the_padding_out_of_the_statistics():
    """With the images' regions, BN takes the statistics of their own pixels (a stride-2 map of
    a 7 x 10 image: its top-left 4 x 5), as the reference's SyncBN at one image per GPU."""
    net, images, batch, regions, forward = _padded_pair()
    assert regions.valid(torch.zeros(2, 4, 6, 6)) is None  # before any batch
    regions.set([(7, 10), (12, 5)], (12, 12))
    assert regions.valid(torch.zeros(2, 4, 6, 6)) == [(4, 5), (6, 3)]  # stride 2
    assert regions.valid(torch.zeros(2, 2, 3, 3)) == [(2, 3), (3, 2)]  # stride 4
    assert regions.valid(torch.zeros(3, 2, 3, 3)) is None  # not a map of this batch
    with torch.no_grad():  # the first BN's input, each image run alone (no padding)
        alone = [net[0](im[None])[0] for im in images]  # (4, 4, 5) and (4, 6, 3)
    pixels = torch.cat([a.flatten(1) for a in alone], 1)  # 20 + 18 positions
    with recalibrated(net, [batch], 2, forward, regions=regions):
        torch.testing.assert_close(net[1].running_mean, pixels.mean(1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net[1].running_var, pixels.var(1), rtol=1e-5, atol=1e-5)
    with recalibrated(net, [batch], 2, forward):  # the padded batch's: 106 zeros of 144 enter
        assert not torch.allclose(net[1].running_var, pixels.var(1), rtol=0.05)
    # the reference's running average: each image weighs the same (SyncBN averages the GPUs'
    # means and mean squares), from reset buffers (mean 0, variance 1), momentum 0.1
    mean = torch.stack([a.mean((1, 2)) for a in alone]).mean(0)
    var = torch.stack([(a - mean[:, None, None]).square().mean((1, 2)) for a in alone]).mean(0)
    with recalibrated(net, [batch], 2, forward, momentum=0.1, regions=regions):
        torch.testing.assert_close(net[1].running_mean, 0.1 * mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net[1].running_var, 0.9 + 0.1 * var * 38 / 37, rtol=1e-5,
                                   atol=1e-6)
        assert not torch.allclose(mean, pixels.mean(1), rtol=1e-3)  # the weights matter here
    for m in (net[1], net[4]):
        assert "forward" not in vars(m)  # BN's own forward again


def test_image_regions_normalise_with_the_images_statistics():
    """Downstream layers see the batch normalised with its images' statistics (SyncBN's), and
    a layer outside the regions' module keeps torch's padded statistics."""
    net, images, batch, _, _ = _padded_pair()
    regions = ImageRegions(net[:2])  # the first BN only

    def forward(b):
        regions.set([im.shape[1:] for im in images], b.shape[-2:])
        net(b)

    with torch.no_grad():
        x = net[0](batch)
        valid = torch.zeros(2, 1, 6, 6)
        valid[0, :, :4, :5] = valid[1, :, :6, :3] = 1
        mean = (x * valid).sum((0, 2, 3)) / 38
        var = ((x - mean[:, None, None]).square() * valid).sum((0, 2, 3)) / 38
        y = net[3](torch.relu((x - mean[:, None, None]) / (var[:, None, None] + 1e-5).sqrt()))
    with recalibrated(net, [batch], 2, forward, regions=regions):
        torch.testing.assert_close(net[4].running_mean, y.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
