"""RSSI fingerprints: the in-graph transform and the training augmentation both localization models use."""

import torch

from edgehal.nets.rssi import RssiAugmentation, RssiTransform


def _positive(n, width=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, width, generator=g) * 0.9 + 0.05
    return torch.where(torch.rand(n, width, generator=g) < 0.5, torch.zeros_like(x), x)


def test_transform_maps_dbm_to_the_positive_representation():
    t = RssiTransform(undetected_dbm=-110.0, heard=[1, 1, 1, 0, 1], power=1.0)
    x = torch.tensor([[100.0, -110.0, 0.0, -30.0, -55.0]])
    # not detected -> 0, the floor -> 0, 0 dBm -> 1, a never-heard access point -> 0
    torch.testing.assert_close(t(x), torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.5]]))
    powed = RssiTransform(undetected_dbm=-110.0, heard=[1] * 5, power=2.0)
    torch.testing.assert_close(powed(x)[0, 3:], torch.tensor([(80.0 / 110.0) ** 2, 0.25]))
    assert set(dict(t.named_buffers())) == {"floor_dbm", "heard"}


def test_augmentation_changes_only_what_was_heard_and_stays_in_range():
    torch.manual_seed(0)
    aug = RssiAugmentation(undetected_dbm=-110.0, shift_db=3.0, noise_db=1.0, dropout=0.3)
    x = _positive(64)
    y = aug(x)
    assert torch.all(y[x == 0] == 0)                  # nothing appears where nothing was heard
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0 and not torch.equal(x, y)
    lost = (x > 0) & (y == 0)
    assert 0.2 < float(lost.sum()) / float((x > 0).sum()) < 0.4   # about `dropout` of the readings
    assert dict(aug.state_dict()) == {}               # nothing to save, nothing in the graph


def test_augmentation_scales_decibels_to_the_floor():
    torch.manual_seed(0)
    x = torch.full((2000, 1), 0.5)
    shifted = RssiAugmentation(undetected_dbm=-100.0, shift_db=5.0, noise_db=0.0, dropout=0.0)(x)
    # 5 dB on a 100 dB scale is a std of 0.05 around the reading
    assert abs(float(shifted.std()) - 0.05) < 0.005 and abs(float(shifted.mean()) - 0.5) < 0.005
    none = RssiAugmentation(undetected_dbm=-100.0, shift_db=0.0, noise_db=0.0, dropout=0.0)
    assert torch.equal(none(x), x)
