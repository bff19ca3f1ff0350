import random

import pytest

from detnas.plan import flops
from detnas.plan.space import (
    REGISTRY,
    SPACES,
    Arch,
    crossover,
    get_space,
    mutate,
    resolve,
    sample,
    sample_binned,
    sample_within,
)


def test_encoding_round_trip_in_every_space():
    rng = random.Random(0)
    for name in SPACES:
        for _ in range(20):
            arch = sample(name, rng)
            assert Arch.parse(str(arch), name) == arch
            assert [len(s) for s in str(arch).split("-")] == list(get_space(name).stage_blocks)


def test_published_encoding_reads_block_by_block():
    arch = resolve("DetNAS-COCO-FPN-300M")
    assert arch.choices[:4] == (2, 1, 2, 0)
    assert arch.stages()[2] == (3, 3, 1, 3, 0, 0, 3, 1)
    assert resolve("DetNASNet").choices == resolve("DetNASNet-3.8G").choices
    assert resolve("DetNASNet").space == "1.3G" and resolve("DetNASNet-3.8G").space == "3.8G"


@pytest.mark.parametrize(
    "text, message",
    [
        ("2120-2112-3313003-3132", "does not fit space 300M"),
        ("2120-2112-33130031", "does not fit space 300M"),
        ("2120-2112-33130031-3142", "'4' is not a choice"),
        ("2120-2112-3313x031-3132", "'x' is not a choice"),
    ],
)
def test_parse_errors_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        Arch.parse(text, "300M")


def test_unknown_space_and_name():
    with pytest.raises(ValueError, match="unknown space 'big'"):
        Arch.parse("0-0-0-0", "big")
    with pytest.raises(ValueError, match="not a registered arch name"):
        resolve("DetNAS-nope")
    with pytest.raises(ValueError, match="space 1.3G, not of space 300M"):
        resolve("DetNASNet", "300M")


def test_registry_covers_the_reference():
    for name in ["DetNAS-COCO-FPN-300M", "DetNAS-COCO-RetinaNet-300M", "DetNAS-VOC-FPN-300M",
                 "DetNAS-VOC-RetinaNet-300M", "DetNASNet", "DetNASNet-3.8G", "SPOS-ImageNet-300M",
                 "ShuffleNetV2-20", "ShuffleNetV2-40", "ShuffleNetV2-40-3.8G"]:
        assert name in REGISTRY
    assert set(resolve("ShuffleNetV2-20").choices) == {0}
    assert len(resolve("ShuffleNetV2-40").choices) == 40


def test_sampling_is_seeded():
    a = [sample("300M", random.Random(3)) for _ in range(2)]
    assert a[0] == a[1]
    assert sample("300M", random.Random(3)) != sample("300M", random.Random(4))


def test_sampling_is_uniform_per_block():
    rng = random.Random(0)
    counts = [0] * 4
    for _ in range(2000):
        for c in sample("test", rng).choices:
            counts[c] += 1
    assert all(abs(c / sum(counts) - 0.25) < 0.02 for c in counts)


def test_flops_bounded_and_binned_sampling_respect_bounds():
    cost = flops.cost_table("300M").backbone_flops
    rng = random.Random(0)
    for _ in range(50):
        assert cost(sample_within("300M", rng, cost, 280e6)) <= 280e6
    bins = [(260e6, 280e6), (300e6, 320e6)]
    hits = [0, 0]
    for _ in range(100):
        f = cost(sample_binned("300M", rng, cost, bins))
        hit = [lo <= f <= hi for lo, hi in bins]
        assert any(hit)
        hits[hit.index(True)] += 1
    assert min(hits) > 25  # both bins are drawn


def test_infeasible_sampling_fails_clearly():
    cost = flops.cost_table("300M").backbone_flops
    with pytest.raises(ValueError, match="infeasible"):
        sample_within("300M", random.Random(0), cost, 1e6, tries=100)


def test_mutation_and_crossover():
    rng = random.Random(0)
    a, b = sample("300M", rng), sample("300M", rng)
    assert mutate(a, rng, prob=0.0) == a
    changed = sum(x != y for x, y in zip(a.choices, mutate(a, rng, prob=1.0).choices, strict=True))
    assert changed > 5  # re-drawn blocks land on a different choice 3 times in 4
    child = crossover(a, b, rng)
    assert all(c in (x, y) for c, x, y in zip(child.choices, a.choices, b.choices, strict=True))
    with pytest.raises(ValueError, match="cannot cross"):
        crossover(a, sample("1.3G", rng), rng)


def test_3_8g_last_conv_is_the_official_codes_1728():
    """DetNAS's maskrcnn_benchmark detnasnet.py and ShuffleNet-Series both give 1728."""
    assert SPACES["3.8G"].last_channels == 1728
