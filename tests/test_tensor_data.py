"""The batched data path: crop/flip statistics against torchvision, identical
images on both data paths, normalisation, colour jitter."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chi2, chi2_contingency
from torch.utils.data import DataLoader

from avalanche_sst.benchmarks import BatchCollate, random_crop_flip, same_class_accumulating
from avalanche_sst.benchmarks.tensor_data import color_jitter, to_normalized_float

SIZE, PAD, DRAWS = 8, 2, 4000
P_CRIT = 1e-4  # chi-square tests reject below this p-value (seeds are fixed, so no flakiness)


# --------------------------------------------------------------------------
# random_crop_flip statistics
# --------------------------------------------------------------------------
def position_image() -> torch.Tensor:
    """1 x 8 x 8 uint8 image whose pixel at (r, c) holds 1 + 8 r + c (0 is the padding)."""
    return (1 + torch.arange(SIZE * SIZE)).view(1, SIZE, SIZE).to(torch.uint8)


def recover_offsets_and_flips(out: torch.Tensor):
    """(dy, dx, flipped) of each crop of :func:`position_image` (padded coordinates)."""
    out = out[:, 0].long()  # [N, H, W]
    n = len(out)
    nz = out > 0
    # Horizontal order: inside the image, values grow by 1 to the right unless flipped.
    both = nz[:, :, 1:] & nz[:, :, :-1]
    step = ((out[:, :, 1:] - out[:, :, :-1]) * both).sum(dim=(1, 2))
    flipped = step < 0
    assert (step.abs() > 0).all()
    unflipped = torch.where(flipped[:, None, None], out.flip(-1), out)
    # The smallest non-zero value is the top-left original pixel inside the crop.
    masked = torch.where(unflipped > 0, unflipped, torch.full_like(unflipped, 10_000))
    pos = masked.view(n, -1).argmin(dim=1)
    i, j = pos // SIZE, pos % SIZE
    v = unflipped.view(n, -1)[torch.arange(n), pos] - 1
    r, c = v // SIZE, v % SIZE
    dy, dx = r - i + PAD, c - j + PAD
    # Consistency: re-cropping the padded image at (dy, dx) reproduces every sample.
    padded = torch.nn.functional.pad(position_image().long()[0], (PAD,) * 4)
    for k in range(0, n, max(n // 50, 1)):
        crop = padded[dy[k]:dy[k] + SIZE, dx[k]:dx[k] + SIZE]
        assert torch.equal(unflipped[k], crop)
    return dy, dx, flipped


def assert_uniform(values: torch.Tensor, k: int):
    counts = torch.bincount(values, minlength=k).double()
    assert len(counts) == k, f"values outside [0, {k})"
    expected = len(values) / k
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert chi2.sf(stat, k - 1) > P_CRIT, (counts.tolist(), stat)


def batched_draws():
    images = position_image().expand(DRAWS, -1, -1, -1).contiguous()
    out = random_crop_flip(images, padding=PAD, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    return recover_offsets_and_flips(out)


def torchvision_draws():
    from torchvision.transforms import v2

    tf = v2.Compose([v2.RandomCrop(SIZE, padding=PAD), v2.RandomHorizontalFlip(0.5)])
    img = position_image()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        out = torch.stack([tf(img) for _ in range(DRAWS)])
    return recover_offsets_and_flips(out)


def test_random_crop_flip_offsets_uniform_and_flip_half():
    dy, dx, flipped = batched_draws()
    k = 2 * PAD + 1
    assert int(dy.min()) == 0 and int(dy.max()) == 2 * PAD
    assert int(dx.min()) == 0 and int(dx.max()) == 2 * PAD
    assert_uniform(dy, k)
    assert_uniform(dx, k)
    assert_uniform(dy * k + dx, k * k)  # dy and dx are independent draws
    rate = float(flipped.double().mean())
    assert abs(rate - 0.5) < 4 * (0.25 / DRAWS) ** 0.5, rate
    # flips independent of the offsets
    table = torch.zeros(2, k, dtype=torch.long)
    table.index_put_((flipped.long(), dx), torch.ones(DRAWS, dtype=torch.long), accumulate=True)
    assert chi2_contingency(table.numpy())[1] > P_CRIT


def test_random_crop_flip_matches_torchvision_distribution():
    ours, ref = batched_draws(), torchvision_draws()
    k = 2 * PAD + 1
    for a, b in ((ours[0], ref[0]), (ours[1], ref[1])):
        table = torch.stack([torch.bincount(a, minlength=k), torch.bincount(b, minlength=k)])
        assert table.shape == (2, k)
        assert chi2_contingency(table.numpy())[1] > P_CRIT, table.tolist()
    flips = torch.tensor([[int(ours[2].sum()), DRAWS - int(ours[2].sum())],
                          [int(ref[2].sum()), DRAWS - int(ref[2].sum())]])
    assert chi2_contingency(flips.numpy())[1] > P_CRIT, flips.tolist()
    # both are uniform on their own, too
    assert_uniform(ref[0], k)
    assert_uniform(ref[1], k)


def test_random_crop_flip_options():
    images = position_image().expand(16, -1, -1, -1).contiguous()
    # no padding, no flip: the identity
    assert torch.equal(random_crop_flip(images, padding=0, flip=False), images)
    # padding 0 with flip: every sample is the image or its mirror, and both occur
    out = random_crop_flip(images, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    is_same = (out == images).flatten(1).all(1)
    is_flip = (out == images.flip(-1)).flatten(1).all(1)
    assert (is_same | is_flip).all() and is_same.any() and is_flip.any()
    # the generator makes it deterministic, and it works on float input as well
    f = images.float()
    a = random_crop_flip(f, 2, generator=torch.Generator().manual_seed(3))
    b = random_crop_flip(f, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.float32


# --------------------------------------------------------------------------
# both data paths feed identical images without augmentation
# --------------------------------------------------------------------------
def _batches(dataset):
    loader = DataLoader(dataset, batch_size=24, shuffle=False, collate_fn=dataset.collate_fn)
    xs, ys = [], []
    for batch in loader:
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("channels", [1, 3])
def test_batched_and_per_sample_paths_agree_without_augmentation(make_data, channels):
    train, test = make_data(30, seed=0, size=12, channels=channels), make_data(10, seed=1, size=12,
                                                                              channels=channels)
    kw = dict(ratios=(1, 1), seed=4, validation_fraction=0.2, augment=False)
    fast = same_class_accumulating(train, test, data_path="batched", **kw)
    ref = same_class_accumulating(train, test, data_path="per_sample", **kw)
    assert isinstance(fast.train_stream[0].dataset.collate_fn, BatchCollate)
    assert not isinstance(ref.train_stream[0].dataset.collate_fn, BatchCollate)
    for stream in ("train_stream", "test_stream", "valid_stream"):
        xa, ya = _batches(getattr(fast, stream)[0].dataset)
        xb, yb = _batches(getattr(ref, stream)[0].dataset)
        assert xa.dtype == xb.dtype == torch.float32
        assert xa.shape == xb.shape == (len(ya), channels, 12, 12)
        assert torch.allclose(xa, xb.as_subclass(torch.Tensor), atol=1e-6), stream
        assert torch.equal(ya, yb)
        # normalised with the training set's statistics: not the raw uint8 scale
        assert float(xa.abs().max()) < 10
    # and the images are the training set's own pixels, normalised
    mean = train.images.float().div(255).mean(dim=(0, 2, 3))
    std = train.images.float().div(255).std(dim=(0, 2, 3))
    xt, yt = _batches(fast.test_stream[0].dataset)
    expected = (test.images.float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    assert torch.allclose(xt, expected, atol=1e-5)
    assert yt.tolist() == test.targets


def test_augmented_paths_both_change_the_training_images(make_data):
    train, test = make_data(30, seed=0), make_data(10, seed=1)
    for path in ("batched", "per_sample"):
        aug = same_class_accumulating(train, test, ratios=(1, 1), seed=4, augment=True, data_path=path)
        plain = same_class_accumulating(train, test, ratios=(1, 1), seed=4, augment=False, data_path=path)
        torch.manual_seed(0)
        xa, ya = _batches(aug.train_stream[0].dataset)
        xp, yp = _batches(plain.train_stream[0].dataset)
        assert xa.shape == xp.shape and torch.equal(ya, yp)
        assert not torch.allclose(xa, xp), path
        # the test stream is never augmented
        assert torch.allclose(_batches(aug.test_stream[0].dataset)[0], _batches(plain.test_stream[0].dataset)[0])


# --------------------------------------------------------------------------
# BatchCollate
# --------------------------------------------------------------------------
def test_batch_collate_normalises_by_hand():
    a = torch.tensor([[[0, 255], [51, 102]], [[255, 255], [0, 0]]], dtype=torch.uint8)  # 2 x 2 x 2
    b = torch.tensor([[[204, 153], [0, 255]], [[51, 51], [102, 102]]], dtype=torch.uint8)
    collate = BatchCollate(mean=[0.5, 0.2], std=[0.25, 0.5], augment=False)
    x, y, t = collate([(a, 3, 0), (b, 1, 0)])
    expected = torch.tensor([
        [[[-2.0, 2.0], [-1.2, -0.4]], [[1.6, 1.6], [-0.4, -0.4]]],
        [[[1.2, 0.4], [-2.0, 2.0]], [[0.0, 0.0], [0.4, 0.4]]],
    ])
    assert x.dtype == torch.float32
    assert torch.allclose(x, expected, atol=1e-6)
    assert y.tolist() == [3, 1] and y.dtype == torch.long
    assert t.tolist() == [0, 0] and t.dtype == torch.long
    assert torch.allclose(to_normalized_float(torch.stack([a, b]), [0.5, 0.2], [0.25, 0.5]), expected, atol=1e-6)


def test_batch_collate_augment_changes_images_keeps_shape_and_dtype():
    g = torch.Generator().manual_seed(0)
    items = [(torch.randint(0, 256, (3, 8, 8), generator=g, dtype=torch.uint8), i % 4) for i in range(16)]
    plain = BatchCollate([0.5] * 3, [0.25] * 3, augment=False)(items)
    torch.manual_seed(0)
    aug = BatchCollate([0.5] * 3, [0.25] * 3, augment=True, padding=2)(items)
    assert aug[0].shape == plain[0].shape == (16, 3, 8, 8)
    assert aug[0].dtype == torch.float32
    assert torch.equal(aug[1], plain[1])
    changed = ~torch.isclose(aug[0], plain[0]).flatten(1).all(1)
    assert int(changed.sum()) >= 12  # 1/50 per sample to draw offset (2, 2) without a flip
    # padding shows up as the normalised zero pixel
    zero = (0 - 0.5) / 0.25
    assert bool((aug[0] == zero).any())


# --------------------------------------------------------------------------
# colour jitter
# --------------------------------------------------------------------------
def test_color_jitter_zero_strength_is_identity():
    x = torch.rand(6, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(color_jitter(x, 0, 0, 0), x)


def test_color_jitter_brightness_factors():
    n = 200
    x = torch.full((n, 3, 4, 4), 0.5)
    out = color_jitter(x, brightness=0.4, contrast=0, saturation=0, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    factors = out / x
    per_sample = factors.flatten(1)
    # one factor per sample, applied to every pixel
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample))
    f = per_sample[:, 0]
    assert (f >= 0.6 - 1e-6).all() and (f <= 1.4 + 1e-6).all()
    assert len(set(f.tolist())) == n  # per-sample factors differ
    assert float(f.min()) < 0.7 and float(f.max()) > 1.3  # the whole range is used
    assert abs(float(f.mean()) - 1.0) < 0.05
    # deterministic given the generator
    again = color_jitter(x, 0.4, 0, 0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_color_jitter_clamps_to_unit_range():
    x = torch.full((100, 3, 3, 3), 0.9)
    for strengths in ((0.4, 0, 0), (0.4, 0.4, 0.4)):
        out = color_jitter(x, *strengths, generator=torch.Generator().manual_seed(1))
        assert float(out.max()) <= 1.0 and float(out.min()) >= 0.0
        assert bool((out == 1.0).any())  # brightness factors above 1/0.9 hit the clamp
        assert bool((out < 0.9).any())
    dark = color_jitter(torch.zeros(4, 3, 3, 3), 0.4, 0.4, 0.4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(dark, torch.zeros(4, 3, 3, 3))


def test_color_jitter_contrast_and_saturation():
    g = torch.Generator().manual_seed(0)
    # contrast blends with the mean grey level: a flat image is unchanged
    flat = torch.full((5, 1, 4, 4), 0.3)
    assert torch.allclose(color_jitter(flat, 0, 0.4, 0, generator=g), flat)
    # saturation blends with the greyscale image: a grey colour image is unchanged ...
    grey = torch.rand(5, 1, 4, 4, generator=g).expand(-1, 3, -1, -1).contiguous()
    assert torch.allclose(color_jitter(grey, 0, 0, 0.4, generator=g), grey, atol=1e-6)
    # ... and a coloured one changes, keeping its per-pixel grey level
    col = 0.25 + 0.5 * torch.rand(5, 3, 4, 4, generator=g)
    out = color_jitter(col, 0, 0, 0.4, generator=g)
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert not torch.allclose(out, col)
    assert torch.allclose((out * w).sum(1), (col * w).sum(1), atol=1e-5)
    # saturation has no effect on single-channel images
    one = torch.rand(5, 1, 4, 4, generator=g)
    assert torch.equal(color_jitter(one, 0, 0, 0.4, generator=g), one)
