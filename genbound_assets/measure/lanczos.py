"""Stochastic Lanczos quadrature (SLQ) and Hutchinson trace estimation for symmetric operators.

Pure linear algebra: nothing here knows about models.  An *operator* is anything with
``shape == (n, n)`` and ``matvec(v) -> A v`` on 1-D torch tensors (``HessianOperator`` in
``hessian.py``), a dense symmetric ``torch.Tensor`` / ``numpy.ndarray``, or a
``scipy.sparse.linalg.LinearOperator``; :func:`as_operator` wraps them all.

Estimators (Ubaru, Chen & Saad 2017; Finzi et al. 2025, App. B.3).  For Rademacher probes v
(entries +-1, so ||v||^2 = n) run m Lanczos steps from q1 = v / sqrt(n); the tridiagonal
T_k = S diag(theta) S^T gives Ritz nodes theta_j and weights w_j = S[0, j]^2 (sum_j w_j = 1), and

    v^T f(A) v  ~=  n * sum_j w_j f(theta_j),        Tr f(A)  ~=  (n / n_v) sum_v sum_j w_vj f(theta_vj).

The quadrature is exact for polynomials of degree < 2k, and exact for every f once the Krylov
space is exhausted (an invariant subspace: *breakdown*, beta_k = 0, handled by stopping early).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal

__all__ = [
    "DenseOperator",
    "HutchinsonResult",
    "SLQResult",
    "as_operator",
    "hutchinson_trace",
    "lanczos",
    "rademacher",
    "slq",
]


# --------------------------------------------------------------------------------------------
# operators
# --------------------------------------------------------------------------------------------


class DenseOperator:
    """A dense symmetric matrix as an operator (tests, small problems)."""

    def __init__(self, matrix, dtype: torch.dtype | None = None):
        a = torch.as_tensor(np.asarray(matrix) if not torch.is_tensor(matrix) else matrix)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"need a square matrix, got shape {tuple(a.shape)}")
        self.matrix = a if dtype is None else a.to(dtype)
        self.shape = (a.shape[0], a.shape[0])
        self.dtype = self.matrix.dtype
        self.device = self.matrix.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matrix @ v.to(self.matrix.dtype)


class _ScipyOperator:
    def __init__(self, op):
        self._op = op
        self.shape = tuple(op.shape)
        self.dtype = torch.float64
        self.device = torch.device("cpu")

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        out = self._op.matvec(v.detach().cpu().double().numpy())
        return torch.from_numpy(np.asarray(out, dtype=np.float64).reshape(-1))


def as_operator(a: Any):
    """Wrap a dense matrix / scipy LinearOperator; pass through objects with ``matvec``+``shape``."""
    if torch.is_tensor(a) or isinstance(a, np.ndarray):
        return DenseOperator(a)
    try:  # scipy LinearOperator (and sparse matrices) expose matvec on numpy arrays
        from scipy.sparse.linalg import LinearOperator

        if isinstance(a, LinearOperator):
            return _ScipyOperator(a)
    except ImportError:  # pragma: no cover
        pass
    if hasattr(a, "matvec") and hasattr(a, "shape"):
        return a
    raise TypeError(f"not an operator: {type(a).__name__} (need .shape and .matvec)")


def _square_dim(op) -> int:
    n0, n1 = (int(s) for s in op.shape)
    if n0 != n1:
        raise ValueError(f"operator must be square, got shape {op.shape}")
    return n0


def _device_of(op) -> torch.device:
    return torch.device(getattr(op, "device", "cpu"))


def rademacher(n: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """n i.i.d. +-1 entries (on the CPU, so a seed gives the same probes on every device)."""
    bits = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int8)
    return bits.to(dtype).mul_(2).sub_(1)


# --------------------------------------------------------------------------------------------
# Lanczos
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanczosRun:
    alpha: np.ndarray  # (k,) diagonal of T
    beta: np.ndarray  # (k-1,) off-diagonal of T
    breakdown: bool  # stopped early on an invariant subspace (beta_k ~ 0)
    n_matvecs: int

    @property
    def k(self) -> int:
        return len(self.alpha)

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and Gauss-quadrature weights (squared first components)."""
        if self.k == 1:
            return self.alpha.copy(), np.ones(1)
        theta, s = eigh_tridiagonal(self.alpha, self.beta)
        w = s[0, :] ** 2
        return theta, w / w.sum()  # sum is 1 up to rounding; renormalize exactly


def lanczos(
    op,
    q1: torch.Tensor,
    n_steps: int,
    *,
    reorthogonalize: bool = True,
    breakdown_tol: float | None = None,
    basis_device: torch.device | str | None = None,
) -> LanczosRun:
    """Symmetric Lanczos from ``q1`` (normalized here), at most ``n_steps`` matvecs.

    ``reorthogonalize=True`` keeps every Lanczos vector (memory n_steps * n * itemsize, on
    ``basis_device``, default the operator's device) and re-orthogonalizes each new one against
    all of them twice (classical Gram-Schmidt, "twice is enough"): no ghost Ritz values, and the
    quadrature stays valid for any m.  Breakdown: when beta_j <= tol * ||A||_est, the Krylov space
    is (numerically) invariant and the run stops with k = j + 1 < n_steps nodes; the quadrature is
    then exact.  ``tol`` defaults to eps^(2/3) of q1's dtype (3.7e-11 in float64, 2.4e-5 in
    float32): above the rounding noise of a matvec that went through an n-dimensional sum, and
    small enough that the stopped tail's quadrature weight is negligible.
    """
    n = q1.numel()
    m = int(min(n_steps, n))
    if m < 1:
        raise ValueError("n_steps must be >= 1")
    dtype, device = q1.dtype, q1.device
    eps = torch.finfo(dtype).eps
    tol = eps ** (2.0 / 3.0) if breakdown_tol is None else float(breakdown_tol)
    bdev = device if basis_device is None else torch.device(basis_device)

    q = q1.reshape(-1) / torch.linalg.vector_norm(q1)
    basis = torch.empty((m, n), dtype=dtype, device=bdev) if reorthogonalize else None
    alpha: list[float] = []
    beta: list[float] = []
    q_prev = None
    anorm = 0.0
    breakdown = False
    for j in range(m):
        if basis is not None:
            basis[j].copy_(q)
        w = op.matvec(q).reshape(-1).to(dtype=dtype, device=device)
        anorm = max(anorm, float(torch.linalg.vector_norm(w)))  # ||A q|| <= ||A||
        a = float(torch.dot(q, w))
        alpha.append(a)
        if j == m - 1:
            break
        w = w - a * q
        if q_prev is not None:
            w = w - beta[-1] * q_prev
        if basis is not None:
            qs = basis[: j + 1]
            for _ in range(2):
                wb = w.to(bdev)
                w = w - (qs.T @ (qs @ wb)).to(device)
        b = float(torch.linalg.vector_norm(w))
        if b <= tol * anorm:
            breakdown = True
            break
        beta.append(b)
        q_prev, q = q, w / b
    return LanczosRun(
        alpha=np.asarray(alpha, dtype=np.float64),
        beta=np.asarray(beta, dtype=np.float64),
        breakdown=breakdown,
        n_matvecs=len(alpha),
    )


# --------------------------------------------------------------------------------------------
# SLQ
# --------------------------------------------------------------------------------------------


def _sqrt_clamped(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(x, 0.0))


@dataclass(frozen=True)
class SLQResult:
    """Ritz nodes/weights of ``n_vectors`` Lanczos runs on an n x n symmetric operator."""

    dim: int
    n_steps: int  # m requested
    seed: int
    nodes: tuple[np.ndarray, ...]  # per probe: Ritz values theta_vj, ascending
    weights: tuple[np.ndarray, ...]  # per probe: w_vj = (first component)^2, sum_j w_vj = 1
    steps: tuple[int, ...]  # per probe: k_v <= m (k_v < m on breakdown)
    breakdown: tuple[bool, ...]
    n_matvecs: int  # operator applications spent (= sum_v k_v)
    runs: tuple[LanczosRun, ...] = field(repr=False, default=())

    @property
    def n_vectors(self) -> int:
        return len(self.nodes)

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """All runs' nodes and weights / n_v concatenated (weights sum to 1): the averaged
        quadrature, n * sum_j w_j f(theta_j) = :meth:`trace` (``ritz_nodes``/``ritz_weights`` in
        storage; ``bounds.hessian_bits.trace_sqrt_from_spectrum(nodes, weights, dim=n)``)."""
        nodes = np.concatenate(self.nodes)
        weights = np.concatenate(self.weights) / self.n_vectors
        return nodes, weights

    # ---- generic quadrature ----------------------------------------------------------------
    def quadratic_forms(self, f: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Per probe v: n * sum_j w_vj f(theta_vj) ~= v^T f(A) v (exact after breakdown)."""
        return np.array(
            [
                self.dim * float(np.sum(w * f(t)))
                for t, w in zip(self.nodes, self.weights, strict=True)
            ]
        )

    def trace(self, f: Callable[[np.ndarray], np.ndarray]) -> float:
        """Tr f(A) ~= (n / n_v) sum_v sum_j w_vj f(theta_vj)."""
        return float(np.mean(self.quadratic_forms(f)))

    def trace_stderr(self, f: Callable[[np.ndarray], np.ndarray]) -> float:
        """Standard error of :meth:`trace` across probes (nan for a single probe)."""
        q = self.quadratic_forms(f)
        return float(np.std(q, ddof=1) / math.sqrt(len(q))) if len(q) > 1 else float("nan")

    # ---- spectrum edges and the paper's quantities ------------------------------------------
    @property
    def lambda_min(self) -> float:
        """Smallest Ritz value over all runs (>= the true lambda_min: Ritz values lie inside)."""
        return float(min(t[0] for t in self.nodes))

    @property
    def lambda_max(self) -> float:
        """Largest Ritz value over all runs (<= the true lambda_max)."""
        return float(max(t[-1] for t in self.nodes))

    @property
    def shift(self) -> float:
        """PSD shift |lambda_min| when lambda_min < 0, else 0 (lambda_min = min Ritz value)."""
        return max(0.0, -self.lambda_min)

    def trace_A(self) -> float:
        """Tr(A) by SLQ (= Hutchinson on the same probes: sum_j w_j theta_j = alpha_1)."""
        return self.trace(lambda t: t)

    def trace_sqrt_shifted(self) -> float:
        """Tr((A + s I)^1/2), s = :attr:`shift`: the paper's PSD-shifted Tr(H^1/2) (App. B.3)."""
        s = self.shift
        return self.trace(lambda t: _sqrt_clamped(t + s))

    def trace_sqrt_abs(self) -> float:
        """Tr(|A|^1/2) = sum_i |lambda_i|^1/2."""
        return self.trace(lambda t: np.sqrt(np.abs(t)))

    def trace_sqrt_positive(self) -> float:
        """Tr(A_+^1/2) = sum_i max(lambda_i, 0)^1/2: the positive part alone, no shift."""
        return self.trace(_sqrt_clamped)

    # ---- spectral density ---------------------------------------------------------------------
    def density(
        self,
        grid: np.ndarray | None = None,
        sigma: float | None = None,
        n_points: int = 1001,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian-broadened spectral density phi(t) = (1/n_v) sum_v sum_j w_vj N(t; theta_vj, sigma^2).

        phi integrates to 1 (multiply by n for an eigenvalue count per unit lambda).  Default
        sigma = 1% of the Ritz width (lambda_max - lambda_min), default grid spans the Ritz
        range padded by 5 sigma.
        """
        width = self.lambda_max - self.lambda_min
        if sigma is None:
            sigma = 0.01 * width if width > 0 else max(abs(self.lambda_max), 1.0) * 1e-3
        sigma = float(sigma)
        if sigma <= 0:
            raise ValueError("sigma must be > 0")
        if grid is None:
            grid = np.linspace(self.lambda_min - 5 * sigma, self.lambda_max + 5 * sigma, n_points)
        grid = np.asarray(grid, dtype=np.float64)
        theta, w = self.pooled()
        z = (grid[:, None] - theta[None, :]) / sigma
        phi = (np.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi))) @ w
        return grid, phi

    def summary(self) -> dict:
        """JSON-able scalars (for storage / reports)."""
        return {
            "dim": self.dim,
            "n_steps": self.n_steps,
            "n_vectors": self.n_vectors,
            "seed": self.seed,
            "steps": list(self.steps),
            "breakdown": list(self.breakdown),
            "n_matvecs": self.n_matvecs,
            "lambda_min": self.lambda_min,
            "lambda_max": self.lambda_max,
            "shift": self.shift,
            "trace": self.trace_A(),
            "trace_stderr": self.trace_stderr(lambda t: t),
            "trace_sqrt_shifted": self.trace_sqrt_shifted(),
            "trace_sqrt_shifted_stderr": self.trace_stderr(
                lambda t, s=self.shift: _sqrt_clamped(t + s)
            ),
            "trace_sqrt_abs": self.trace_sqrt_abs(),
            "trace_sqrt_positive": self.trace_sqrt_positive(),
        }


def slq(
    operator,
    n_steps: int,
    n_vectors: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    *,
    reorthogonalize: bool = True,
    breakdown_tol: float | None = None,
    basis_device: torch.device | str | None = None,
) -> SLQResult:
    """Stochastic Lanczos quadrature with Rademacher probes (full reorthogonalization by default).

    Cost: at most ``n_steps * n_vectors`` matvecs (HVPs); memory ``n_steps * n * itemsize`` for
    the Krylov basis of one run at a time.  Probe v depends only on (seed, its index), so
    raising ``n_vectors`` extends a run rather than redrawing it.
    """
    op = as_operator(operator)
    n = _square_dim(op)
    if n_vectors < 1:
        raise ValueError("n_vectors must be >= 1")
    gen = torch.Generator().manual_seed(int(seed))
    device = _device_of(op)
    runs, nodes, weights = [], [], []
    for _ in range(n_vectors):
        v = rademacher(n, gen, dtype).to(device)
        run = lanczos(
            op,
            v,
            n_steps,
            reorthogonalize=reorthogonalize,
            breakdown_tol=breakdown_tol,
            basis_device=basis_device,
        )
        theta, w = run.ritz()
        runs.append(run)
        nodes.append(theta)
        weights.append(w)
    return SLQResult(
        dim=n,
        n_steps=int(n_steps),
        seed=int(seed),
        nodes=tuple(nodes),
        weights=tuple(weights),
        steps=tuple(r.k for r in runs),
        breakdown=tuple(r.breakdown for r in runs),
        n_matvecs=sum(r.n_matvecs for r in runs),
        runs=tuple(runs),
    )


# --------------------------------------------------------------------------------------------
# Hutchinson
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HutchinsonResult:
    estimate: float  # mean of v^T A v over Rademacher probes
    stderr: float  # sample std (ddof=1) / sqrt(n_vectors); nan for one probe
    samples: np.ndarray  # v^T A v per probe
    dim: int

    @property
    def n_vectors(self) -> int:
        return len(self.samples)


def hutchinson_trace(
    operator, n_vectors: int, seed: int = 0, dtype: torch.dtype = torch.float64
) -> HutchinsonResult:
    """Tr(A) ~= mean_v v^T A v with Rademacher v (variance 2 * sum_{i != j} A_ij^2 per probe)."""
    op = as_operator(operator)
    n = _square_dim(op)
    if n_vectors < 1:
        raise ValueError("n_vectors must be >= 1")
    gen = torch.Generator().manual_seed(int(seed))
    device = _device_of(op)
    samples = np.empty(n_vectors)
    for i in range(n_vectors):
        v = rademacher(n, gen, dtype).to(device)
        samples[i] = float(torch.dot(v, op.matvec(v).reshape(-1).to(dtype=dtype, device=device)))
    stderr = float(np.std(samples, ddof=1) / math.sqrt(n_vectors)) if n_vectors > 1 else math.nan
    return HutchinsonResult(float(samples.mean()), stderr, samples, n)
