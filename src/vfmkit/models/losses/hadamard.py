"""Hadamard matrices for PHI-S: exact constructions for the widths vision models use, a random rotation otherwise.

A Hadamard matrix of order n has entries +-1 and ``H @ H.T = n * I``; divided by ``sqrt(n)`` it is an orthogonal
matrix whose entries all have magnitude ``n ** -0.5``. Rotating a covariance by it spreads every eigenvalue evenly
over all channels, which is what PHI-S needs (every channel then has the mean eigenvalue as its variance).

Constructions (combined recursively, the first plan found wins):

- order 1 and 2 (``[[1, 1], [1, -1]]``), and Kronecker products ``H_a (x) H_b`` (Sylvester's doubling is the
  product with order 2);
- Paley I: order ``q + 1`` for a prime ``q = 3 (mod 4)``: ``H = I + S`` with ``S = [[0, 1^T], [-1, Q]]`` and ``Q`` the
  Jacobsthal matrix ``Q[i, j] = legendre(j - i, q)``;
- Paley II: order ``2 (q + 1)`` for a prime ``q = 1 (mod 4)``: ``H = C (x) [[1, -1], [-1, -1]] + I (x) [[1, 1],
  [1, -1]]`` with the symmetric conference matrix ``C = [[0, 1^T], [1, Q]]``.

Every width of the registry has an exact plan (384 = 12 * 32, 1152 = 36 * 32 with Paley II q = 17, 1280 = 20 * 64,
1792 = 224 * 8 with Paley I q = 223, ...). Orders that are not 1, 2 or a multiple of 4 cannot have one; for those
(and the rare multiples of 4 no construction here reaches) :func:`rotation_matrix` returns a seeded random
orthogonal matrix and logs that it did.
"""

from __future__ import annotations

import logging
from functools import cache

import torch

logger = logging.getLogger(__name__)

Plan = tuple
"""A construction: ``("base", n)``, ``("paley1", q)``, ``("paley2", q)`` or ``("kron", plan_a, plan_b)``."""


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    k = 3
    while k * k <= n:
        if n % k == 0:
            return False
        k += 2
    return True


@cache
def hadamard_plan(n: int) -> Plan | None:
    """How to build a Hadamard matrix of order ``n`` (None when no construction here reaches it)."""
    if n in (1, 2):
        return ("base", n)
    if n < 1 or n % 4:
        return None
    if _is_prime(n - 1) and (n - 1) % 4 == 3:
        return ("paley1", n - 1)
    if _is_prime(n // 2 - 1) and (n // 2 - 1) % 4 == 1:
        return ("paley2", n // 2 - 1)
    for a in range(2, int(n**0.5) + 1):
        if n % a:
            continue
        plan_a, plan_b = hadamard_plan(a), hadamard_plan(n // a)
        if plan_a is not None and plan_b is not None:
            return ("kron", plan_a, plan_b)
    return None


def _legendre_row(q: int) -> torch.Tensor:
    """(q,) float64: chi(k) for k = 0..q-1 (0 for k = 0, +1 for quadratic residues, -1 otherwise)."""
    chi = -torch.ones(q, dtype=torch.float64)
    chi[0] = 0.0
    chi[sorted({(k * k) % q for k in range(1, q)})] = 1.0
    return chi


def _jacobsthal(q: int) -> torch.Tensor:
    """(q, q) float64 Jacobsthal matrix ``Q[i, j] = chi(j - i mod q)``."""
    chi = _legendre_row(q)
    index = (torch.arange(q)[None, :] - torch.arange(q)[:, None]) % q
    return chi[index]


def _bordered(core: torch.Tensor, column_sign: float) -> torch.Tensor:
    """``[[0, 1^T], [column_sign * 1, core]]`` of order len(core) + 1."""
    n = core.shape[0] + 1
    out = torch.zeros(n, n, dtype=torch.float64)
    out[0, 1:] = 1.0
    out[1:, 0] = column_sign
    out[1:, 1:] = core
    return out


def _build(plan: Plan) -> torch.Tensor:
    kind = plan[0]
    if kind == "base":
        return torch.ones(1, 1, dtype=torch.float64) if plan[1] == 1 else _SYLVESTER_2.clone()
    if kind == "paley1":
        skew = _bordered(_jacobsthal(plan[1]), -1.0)
        return torch.eye(skew.shape[0], dtype=torch.float64) + skew
    if kind == "paley2":
        conference = _bordered(_jacobsthal(plan[1]), 1.0)
        eye = torch.eye(conference.shape[0], dtype=torch.float64)
        return torch.kron(conference, _PALEY2_A) + torch.kron(eye, _PALEY2_B)
    return torch.kron(_build(plan[1]), _build(plan[2]))


_SYLVESTER_2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
_PALEY2_A = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
_PALEY2_B = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)


def hadamard_matrix(n: int, normalized: bool = True) -> torch.Tensor | None:
    """A Hadamard matrix of order ``n`` as float64 (n, n), or None when no construction reaches ``n``.

    Args:
        n: the order.
        normalized: divide by ``sqrt(n)`` (orthogonal, entries +-n^-1/2); False gives the +-1 matrix.
    """
    plan = hadamard_plan(n)
    if plan is None:
        return None
    matrix = _build(plan)
    return matrix / n**0.5 if normalized else matrix


def random_orthogonal(n: int, seed: int = 0) -> torch.Tensor:
    """A seeded random orthogonal (n, n) float64 matrix (QR of a Gaussian, signs fixed so it is Haar-distributed)."""
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r))[None, :]


def rotation_matrix(n: int) -> tuple[torch.Tensor, bool]:
    """The orthogonal (n, n) float64 rotation PHI-S uses and whether it is an exact normalised Hadamard matrix.

    Falls back to :func:`random_orthogonal` (logged as a warning) for orders without a construction: the channel
    variances after PHI-S are then equal only in expectation, not exactly.
    """
    with torch.device("cpu"):  # a constant: built on the CPU also inside a meta-device (dry) build
        matrix = hadamard_matrix(n)
    if matrix is not None:
        return matrix, True
    logger.warning(
        "PHI-S: no Hadamard matrix of order %d (orders are 1, 2 or multiples of 4); using a random orthogonal "
        "rotation instead, so standardised channel variances are equal only on average",
        n,
    )
    with torch.device("cpu"):
        return random_orthogonal(n), False
