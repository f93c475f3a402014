"""Paying for choices made after seeing the data (weighted union bound, Lemma 3.2 / App. A.2).

Picking the best of M bounds computed on the same data is valid only if all M hold
simultaneously.  Two equivalent ways to pay, fixed before looking at the data:

* union cost: a uniform prior 1/M over the options adds log M nats to the code length L(h) of
  every candidate (Lemma 3.2 with L(h) -> L(h) + log M), all candidates at the same delta;
* delta split: statement i is made at delta_i = delta * w_i / sum(w); with equal weights this
  is log M added inside log(1/delta) -- the same price for Freedman's C = (L + log(|K|/delta))/n.

Choices nest: an option that is itself a choice among M' adds log M' more (log M + log M' =
log(M M')).  Used for b in B, group size, GPTQ vs RTN, code-length variant, Delta variant,
Hoeffding vs Bernstein.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._validate import finite_array, finite_scalar, non_negative, positive_int, probability


def choice_cost_nats(n_options: int) -> float:
    """log(M): the code-length price (nats) of choosing one of M options after seeing data."""
    return math.log(positive_int("n_options", n_options))


def _bound_value(result: Any) -> float:
    value = result.bound if hasattr(result, "bound") else result
    return finite_scalar("candidate bound", value)


@dataclass(frozen=True)
class Choice:
    """The best candidate, its bound (with the union cost paid) and what was paid.

    result: what the winning callable returned; value: its numeric bound; price_nats: log M
    plus any outer extra_nats passed in; values: every candidate's priced bound, for reporting.
    """

    name: str
    result: Any
    value: float
    price_nats: float
    n_options: int
    values: dict[str, float] = field(default_factory=dict)

    @property
    def bound(self) -> float:
        return self.value


def best_with_price(candidates: Mapping[str, Callable[[float], Any]], extra_nats: float = 0.0,
                    value: Callable[[Any], float] | None = None) -> Choice:
    """Evaluate each candidate with log(#options) (+ extra_nats) added to its L(h); return the best.

    Weighted union bound (App. A.2): with prior 1/M over the candidates, every candidate's bound
    holds simultaneously at the common delta once log M nats are added to its complexity, so the
    minimum is a valid bound.  ``candidates`` maps a name to ``f(extra_nats) -> bound`` where the
    bound is a float or has a ``.bound`` attribute (or pass ``value``); each ``f`` must add
    ``extra_nats`` to its complexity_nats and use the same delta.  The candidate set must be fixed
    before seeing the data.  Nest by passing ``extra_nats`` from an outer choice.
    """
    if not isinstance(candidates, Mapping):
        raise ValueError(f"candidates must be a mapping name -> callable, got {type(candidates)!r}")
    if not candidates:
        raise ValueError("candidates is empty")
    for name, f in candidates.items():
        if not callable(f):
            raise ValueError(f"candidates[{name!r}] is not callable")
    extra_nats = non_negative("extra_nats", extra_nats)
    get = value if value is not None else _bound_value
    price = extra_nats + choice_cost_nats(len(candidates))
    results = {name: f(price) for name, f in candidates.items()}
    values = {name: float(get(r)) for name, r in results.items()}
    for name, val in values.items():
        if math.isnan(val):
            raise ValueError(f"candidate {name!r} returned a NaN bound")
    best = min(values, key=values.__getitem__)
    return Choice(best, results[best], values[best], price, len(candidates), values)


def split_delta(delta: float, weights: Sequence[float] | Mapping[str, float]
                ) -> list[float] | dict[str, float]:
    """delta_i = delta * w_i / sum(w): the delta-split alternative to the union cost (App. A.2).

    The statements made at the delta_i hold simultaneously with probability >= 1 - delta
    (union bound).  Weights must be fixed before seeing the data.
    """
    delta = probability("delta", delta)
    keys = list(weights.keys()) if isinstance(weights, Mapping) else None
    w = finite_array("weights", list(weights.values()) if keys is not None else list(weights))
    if (w <= 0).any():
        raise ValueError(f"weights must all be > 0, got {w.tolist()}")
    parts = [delta * float(x) / float(w.sum()) for x in w]
    return dict(zip(keys, parts, strict=True)) if keys is not None else parts
