"""PHI-S and the other teacher standardisers: isotropic unit variance, exact inverse, folding, freezing, state."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from vfmkit import list_backbones
from vfmkit.models.losses.hadamard import hadamard_matrix, hadamard_plan, random_orthogonal, rotation_matrix
from vfmkit.models.losses.phi_s import (
    GlobalStandardizer,
    IdentityStandardizer,
    PhiStandardizer,
    build_standardizer,
)


def _registry_widths() -> list[int]:
    widths = set()
    for entry in list_backbones(include_test=True):
        widths |= {entry.summary_dim, entry.feature_dim}
    return sorted(widths)


def test_registry_widths_include_the_common_ones():
    assert {384, 768, 1024, 1152, 1280, 1536}.issubset(_registry_widths())


@pytest.mark.parametrize("width", _registry_widths())
def test_hadamard_is_orthogonal_with_equal_magnitude_entries_for_every_registry_width(width):
    assert hadamard_plan(width) is not None, f"no exact Hadamard construction for {width}"
    signs = hadamard_matrix(width, normalized=False)
    assert bool((signs.abs() == 1).all())  # so the normalised entries are all +-width^-1/2
    h = signs / width**0.5
    rows = torch.randperm(width, generator=torch.Generator().manual_seed(0))[:16]  # 16 rows: cheap for 4608
    gram = h[rows] @ h.T
    expected = torch.zeros_like(gram)
    expected[torch.arange(len(rows)), rows] = 1.0
    torch.testing.assert_close(gram, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(hadamard_matrix(width)[rows], h[rows], rtol=0, atol=0)


@pytest.mark.parametrize("width", [4, 12, 20, 28, 36, 40, 224])
def test_paley_and_kronecker_constructions_are_exact(width):
    h = hadamard_matrix(width, normalized=False)
    assert torch.equal(h @ h.T, width * torch.eye(width, dtype=torch.float64))


def test_orders_without_a_construction_fall_back_to_a_logged_random_rotation(caplog):
    assert hadamard_matrix(10) is None and hadamard_plan(6) is None
    with caplog.at_level(logging.WARNING, logger="vfmkit.models.losses.hadamard"):
        rotation, exact = rotation_matrix(10)
    assert not exact and "random orthogonal" in caplog.text
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(10, dtype=torch.float64))
    assert torch.equal(rotation, random_orthogonal(10))  # seeded: the same on every run and every rank


def _rotated_gaussian(width: int, samples: int = 4096, seed: int = 0) -> torch.Tensor:
    """float32 samples with eigenvalues log-spaced from 1e3 to 1e-3 in a random basis, mean 5."""
    generator = torch.Generator().manual_seed(seed)
    eigenvalues = torch.logspace(3, -3, width, dtype=torch.float64)
    basis = random_orthogonal(width, seed=seed + 1)
    x = torch.randn(samples, width, generator=generator, dtype=torch.float64) * eigenvalues.sqrt()
    return (x @ basis.T + 5.0).float()


@pytest.mark.parametrize("width", [12, 64, 96, 768])
def test_phi_s_gives_every_channel_unit_variance(width):
    x = _rotated_gaussian(width)
    phi = PhiStandardizer(width, freeze_after=4, update_period=1)
    for chunk in x.chunk(4):
        phi.update(chunk)
    assert phi.frozen and phi.hadamard_exact
    variance = phi(x).double().var(dim=0, unbiased=False)
    assert variance.min() > 0.95 and variance.max() < 1.05, (variance.min(), variance.max())


def test_global_standardisation_keeps_the_spread_that_phi_s_removes():
    eigenvalues = torch.logspace(3, -3, 32, dtype=torch.float64)  # axis-aligned: channel variances differ 1e6-fold
    x = (
        torch.randn(4096, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * eigenvalues.sqrt()
    ).float()
    glob, phi = GlobalStandardizer(32, freeze_after=1), PhiStandardizer(32, freeze_after=1)
    glob.update(x)
    phi.update(x)
    assert glob.alpha == phi.alpha  # the same single scale
    spread = glob(x).double().var(dim=0, unbiased=False)
    assert spread.mean() == pytest.approx(1.0, rel=1e-3) and spread.max() > 5.0 and spread.min() < 1e-4
    variance = phi(x).double().var(dim=0, unbiased=False)
    assert variance.min() > 0.95 and variance.max() < 1.05


@pytest.mark.parametrize("kind", ["phi_s", "global", "none"])
def test_inverse_round_trips_and_folds_into_a_linear(kind):
    width = 64
    x = _rotated_gaussian(width, samples=1024)
    standardizer = build_standardizer(kind, width, freeze_after=1)
    standardizer.update(x)
    back = standardizer.inverse(standardizer(x))
    assert (back - x).abs().max() <= 1e-5 * x.abs().max()
    linear = nn.Linear(32, width)
    folded = standardizer.fold_inverse_into_linear(linear)
    hidden = torch.randn(16, 32)
    reference = standardizer.inverse(linear(hidden).double())  # float64 reference of teacher-space outputs
    scale = reference.abs().max()
    assert (folded(hidden).double() - reference).abs().max() <= 1e-5 * scale


def test_phi_s_scales_squared_distances_by_alpha_squared():
    x = _rotated_gaussian(32, samples=512)
    phi = PhiStandardizer(32, freeze_after=1)
    phi.update(x)
    y = phi(x.double())
    ratio = torch.cdist(y[:50], y[50:100]) / torch.cdist(x[:50].double(), x[50:100].double())
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(phi.alpha)), rtol=1e-6, atol=0)


def test_batched_statistics_equal_one_pass_statistics():
    x = _rotated_gaussian(24, samples=999).double() * 1e3 + 1e4  # large mean: the shifted sums must stay exact
    phi = PhiStandardizer(24, freeze_after=100)
    for chunk in x.split([1, 7, 300, 691]):
        phi.update(chunk)
    torch.testing.assert_close(phi.mean, x.mean(0), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(phi.covariance(), torch.cov(x.T, correction=0), rtol=1e-9, atol=1e-6)


def test_estimate_freezes_after_the_given_updates_and_lives_in_the_state_dict():
    x = _rotated_gaussian(16, samples=400)
    phi = PhiStandardizer(16, freeze_after=3, update_period=2)
    for chunk in x.chunk(4):
        phi.update(chunk)
    assert phi.frozen and int(phi.updates) == 3 and float(phi.count) == 300  # the 4th batch was not used
    restored = PhiStandardizer(16, freeze_after=3, update_period=2)
    restored.load_state_dict(phi.state_dict())
    assert restored.frozen
    torch.testing.assert_close(restored(x), phi(x))
    assert "hadamard" not in phi.state_dict()  # deterministic, rebuilt rather than saved


def test_identity_changes_nothing():
    x = torch.randn(5, 8)
    identity = IdentityStandardizer(8)
    identity.update(x)
    assert torch.equal(identity(x), x) and identity.frozen
    with pytest.raises(ValueError, match="unknown feature normalization"):
        build_standardizer("zca", 8)


def test_standardisation_is_not_lowered_by_autocast():
    x = _rotated_gaussian(16, samples=256)
    phi = PhiStandardizer(16, freeze_after=1)
    phi.update(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = phi(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, phi(x))
