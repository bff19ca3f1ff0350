import pytest
import torch
from torch import nn

from detnas.bn import recalibrated
from detnas.space import Arch
from detnas.supernet import Supernet


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
