"""Scaling-law fits with uncertainty (Sec. 4 Fig. 2: Sigma(N) = a + b N^-c; Sec. 5.2 Fig. 3: K(h) = a N^c).

* ``fit_power_law``: y = a x^c by OLS of log y on log x (statsmodels).  Exact t intervals under
  log-normal (multiplicative) noise; a's interval is exp of the intercept's interval.
  ``predict`` gives OLS confidence (curve) and prediction (new observation) intervals in log
  space, exponentiated: the point prediction is the *median* of y, not its mean.
* ``fit_offset_power_law``: y = a + b x^-c by nonlinear least squares (scipy curve_fit), with x
  rescaled by its geometric mean x_ref for conditioning, initialised by profiling c on a grid
  (a, b linear given c).  Covariance = curve_fit's (residual-variance scaled) covariance, carried
  to (a, b, c) by the Jacobian; intervals use t quantiles with n - 3 df.  b's interval is built
  on log b (linear in (log beta, c), far better behaved than b itself when x_ref is far from 1)
  when b > 0.  ``predict`` uses the delta method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import statsmodels.api as sm
from scipy import optimize, stats

from ..bounds._validate import finite_array, same_length

LEVEL = 0.95


@dataclass(frozen=True, eq=False)
class Prediction:
    """Point predictions with 95% intervals: ci_* for the fitted curve, pi_* for a new observation."""

    x: np.ndarray
    y: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    pi_low: np.ndarray
    pi_high: np.ndarray
    method: str


def _xy(x, y, min_n: int, positive_y: bool):
    x = finite_array("x", x)
    y = finite_array("y", y)
    same_length(x=x, y=y)
    if len(x) < min_n:
        raise ValueError(f"x needs at least {min_n} points, got {len(x)}")
    if (x <= 0).any():
        raise ValueError("x must be > 0")
    if positive_y and (y <= 0).any():
        raise ValueError("y must be > 0 for a log-log fit")
    if len(np.unique(x)) < 2:
        raise ValueError("x must take at least two distinct values")
    return x, y


def _x_new(x_new) -> np.ndarray:
    x = np.atleast_1d(np.asarray(x_new, dtype=np.float64))
    x = finite_array("x_new", x.ravel())
    if (x <= 0).any():
        raise ValueError("x_new must be > 0")
    return x


def _summary(title: str, fit) -> str:
    lines = [title, f"n = {fit.n}, R^2 = {fit.r_squared:.4f}",
             f"{'param':>6} {'estimate':>12} {'std err':>12} {'95% CI':>28}"]
    for k, val in fit.params.items():
        lo, hi = fit.conf_int[k]
        lines.append(f"{k:>6} {val:12.5g} {fit.std_errors[k]:12.5g}   [{lo:12.5g}, {hi:12.5g}]")
    return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class _Fit:
    """What every fit reports: parameters with standard errors and 95% intervals, R², residuals."""

    params: dict[str, float]
    std_errors: dict[str, float]
    conf_int: dict[str, tuple[float, float]]
    r_squared: float
    residuals: np.ndarray
    n: int


@dataclass(frozen=True, eq=False)
class PowerLawFit(_Fit):
    """y = a x^c fitted by OLS on (log x, log y); residuals are in log space."""

    method: str = "OLS of log y on log x (statsmodels); a: exp of the intercept's t interval"
    _results: object = field(default=None, repr=False)

    def predict(self, x_new) -> Prediction:
        """Median y at x_new with 95% OLS confidence / prediction intervals, exponentiated."""
        x = _x_new(x_new)
        exog = np.column_stack([np.ones_like(x), np.log(x)])
        frame = self._results.get_prediction(exog).summary_frame(alpha=1 - LEVEL)
        return Prediction(
            x=x, y=np.exp(frame["mean"].to_numpy()),
            ci_low=np.exp(frame["mean_ci_lower"].to_numpy()),
            ci_high=np.exp(frame["mean_ci_upper"].to_numpy()),
            pi_low=np.exp(frame["obs_ci_lower"].to_numpy()),
            pi_high=np.exp(frame["obs_ci_upper"].to_numpy()),
            method="OLS confidence/prediction intervals in log space, exponentiated (median)")

    def summary(self) -> str:
        return _summary("power law y = a x^c", self)


def fit_power_law(x, y) -> PowerLawFit:
    """y = a x^c via OLS of log y on log x (statsmodels); see module docstring."""
    x, y = _xy(x, y, 3, positive_y=True)
    res = sm.OLS(np.log(y), sm.add_constant(np.log(x), has_constant="add")).fit()
    b0, b1 = (float(p) for p in res.params)
    se0, se1 = (float(s) for s in res.bse)
    ci = np.asarray(res.conf_int(alpha=1 - LEVEL))
    a = math.exp(b0)
    return PowerLawFit(
        params={"a": a, "c": b1},
        std_errors={"a": a * se0, "c": se1},  # a: delta method
        conf_int={"a": (math.exp(ci[0, 0]), math.exp(ci[0, 1])), "c": (ci[1, 0], ci[1, 1])},
        r_squared=float(res.rsquared), residuals=np.asarray(res.resid), n=len(x), _results=res)


@dataclass(frozen=True, eq=False)
class OffsetPowerLawFit(_Fit):
    """y = a + b x^-c fitted by nonlinear least squares; residuals are y - fitted."""

    covariance: np.ndarray
    x_ref: float
    residual_variance: float
    method: str = ("curve_fit NLS on x/x_ref; covariance via Jacobian; t(n-3) intervals "
                   "(b on log scale when b > 0)")
    _scaled: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0), repr=False)
    _scaled_cov: np.ndarray | None = field(default=None, repr=False)

    def predict(self, x_new) -> Prediction:
        """y at x_new with 95% delta-method confidence / prediction intervals (t, n - 3 df)."""
        x = _x_new(x_new)
        a, beta, c = self._scaled
        u = x / self.x_ref
        uc = u ** (-c)
        yhat = a + beta * uc
        grad = np.column_stack([np.ones_like(u), uc, -beta * uc * np.log(u)])
        # g' P g as a sum of non-negative terms over P's eigenpairs: the plain quadratic form
        # cancels catastrophically when (a, beta) are nearly collinear (c near 0, few sizes)
        lam, q = np.linalg.eigh(self._scaled_cov)
        var = ((grad @ q) ** 2 * np.maximum(lam, 0.0)).sum(axis=1)
        t = stats.t.ppf(0.5 + LEVEL / 2, self.n - 3)
        se_mean = np.sqrt(np.maximum(var, 0.0))
        se_obs = np.sqrt(var + self.residual_variance)
        return Prediction(x=x, y=yhat, ci_low=yhat - t * se_mean, ci_high=yhat + t * se_mean,
                          pi_low=yhat - t * se_obs, pi_high=yhat + t * se_obs,
                          method="delta method, t quantiles with n - 3 df")

    def summary(self) -> str:
        return _summary("offset power law y = a + b x^-c", self)


def _exp(v: float) -> float:
    """exp that saturates to inf (an unidentified interval end) instead of raising."""
    return math.inf if v > 709.0 else math.exp(v)


def _model(u, a, beta, c):
    return a + beta * u ** (-c)


def _initial(u, y, c_grid) -> tuple[float, float, float]:
    """Profile c over a grid: (a, beta) by simple linear regression of y on u^-c; best SSE wins."""
    z = u[None, :] ** (-np.asarray(c_grid)[:, None])
    zc = z - z.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    szz = np.einsum("ij,ij->i", zc, zc)
    szy = zc @ yc
    ok = szz > 0
    if not ok.any():
        raise ValueError("x gives no usable initial c (all u^-c constant)")
    sse = np.where(ok, yc @ yc - szy**2 / np.where(ok, szz, 1.0), np.inf)
    i = int(np.argmin(sse))
    beta = float(szy[i] / szz[i])
    return float(y.mean() - beta * z[i].mean()), beta, float(c_grid[i])


def fit_offset_power_law(x, y, c_grid=None) -> OffsetPowerLawFit:
    """y = a + b x^-c via scipy.optimize.curve_fit (module docstring).  c_grid: initial c values."""
    x, y = _xy(x, y, 4, positive_y=False)
    x_ref = float(np.exp(np.mean(np.log(x))))
    u = x / x_ref
    grid = np.geomspace(1e-3, 5.0, 200) if c_grid is None else finite_array("c_grid", c_grid)
    p0 = _initial(u, y, grid)
    try:
        popt, pcov = optimize.curve_fit(_model, u, y, p0=p0, maxfev=20000)
    except RuntimeError as err:
        raise ValueError(f"offset power law did not converge: {err}") from None
    if not np.all(np.isfinite(pcov)):
        raise ValueError("offset power law: covariance not identifiable (degenerate data?)")
    a, beta, c = (float(p) for p in popt)
    n = len(x)
    resid = y - _model(u, a, beta, c)
    s2 = float(resid @ resid) / (n - 3)
    # (a, beta, c) -> (a, b, c), b = beta * x_ref^c
    scale = x_ref ** c
    b = beta * scale
    jac = np.array([[1.0, 0.0, 0.0], [0.0, scale, b * math.log(x_ref)], [0.0, 0.0, 1.0]])
    cov = jac @ pcov @ jac.T
    se = np.sqrt(np.diag(cov))
    t = stats.t.ppf(0.5 + LEVEL / 2, n - 3)
    ci = {"a": (a - t * se[0], a + t * se[0]), "c": (c - t * se[2], c + t * se[2])}
    if beta > 0:
        # log b = log beta + c log x_ref: gradient (1/beta, log x_ref) in (beta, c)
        g = np.array([0.0, 1.0 / beta, math.log(x_ref)])
        se_log_b = math.sqrt(max(float(g @ pcov @ g), 0.0))
        ci["b"] = (b * _exp(-t * se_log_b), b * _exp(t * se_log_b))
    else:
        ci["b"] = (b - t * se[1], b + t * se[1])
    sst = float(np.sum((y - y.mean()) ** 2))
    return OffsetPowerLawFit(
        params={"a": a, "b": b, "c": c},
        std_errors={"a": float(se[0]), "b": float(se[1]), "c": float(se[2])},
        conf_int={k: ci[k] for k in ("a", "b", "c")},
        r_squared=1.0 - float(resid @ resid) / sst if sst > 0 else float("nan"),
        residuals=resid, n=n, covariance=cov, x_ref=x_ref, residual_variance=s2,
        _scaled=(a, beta, c), _scaled_cov=pcov)
