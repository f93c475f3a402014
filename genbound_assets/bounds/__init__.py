"""Bound mathematics (pure numpy/scipy): every formula of Finzi et al. 2025, one file per idea.

Map of paper equations to functions: docs/bounds.md and docs/bounds-accounting.md.
"""

from .azuma import AzumaBound, azuma_bound, azuma_width
from .choices import Choice, best_with_price, choice_cost_nats, split_delta
from .closed_form import ClosedFormBound, freedman_closed_form_bound
from .code_length import (
    CodeLength,
    code_length_nats,
    compressed_code_length,
    entropy_code_length,
    nominal_code_length,
    stored_code_length,
)
from .compute_optimal import (
    ComputeOptimalSelection,
    InterpolatedRow,
    interpolate_row,
    select_compute_optimal,
)
from .freedman import FreedmanBound, freedman_bound, freedman_complexity, freedman_grid, v
from .hessian_bits import (
    bits_for_quantization_gap,
    quantization_gap_bound,
    trace_sqrt_from_spectrum,
)
from .loss_range import smoothed_min_entropy, tight_loss_range
from .prequential import (
    PrequentialBound,
    PrequentialComplexity,
    prequential_bound,
    prequential_complexity,
)
from .smoothing import (
    smoothed_entropies,
    smoothed_losses,
    smoothed_worst_case_loss,
    smoothing_alpha,
    smoothing_cost_bound,
    smoothing_excess,
)
from .subsample import SubsampledBound, subsampled_freedman_bound
from .theorem34 import (
    DirectBound,
    Theorem34Terms,
    complexity_from_code_length,
    decomposed_bound,
    direct_bound,
    theorem34_complexity,
    theorem34_terms,
)

__all__ = [
    "AzumaBound",
    "Choice",
    "ClosedFormBound",
    "CodeLength",
    "ComputeOptimalSelection",
    "DirectBound",
    "FreedmanBound",
    "InterpolatedRow",
    "PrequentialBound",
    "PrequentialComplexity",
    "SubsampledBound",
    "Theorem34Terms",
    "azuma_bound",
    "azuma_width",
    "best_with_price",
    "bits_for_quantization_gap",
    "choice_cost_nats",
    "code_length_nats",
    "complexity_from_code_length",
    "compressed_code_length",
    "entropy_code_length",
    "decomposed_bound",
    "direct_bound",
    "freedman_bound",
    "freedman_closed_form_bound",
    "freedman_complexity",
    "freedman_grid",
    "interpolate_row",
    "nominal_code_length",
    "prequential_bound",
    "prequential_complexity",
    "quantization_gap_bound",
    "select_compute_optimal",
    "smoothed_entropies",
    "smoothed_losses",
    "smoothed_min_entropy",
    "smoothed_worst_case_loss",
    "smoothing_alpha",
    "smoothing_cost_bound",
    "smoothing_excess",
    "split_delta",
    "stored_code_length",
    "subsampled_freedman_bound",
    "theorem34_complexity",
    "theorem34_terms",
    "tight_loss_range",
    "trace_sqrt_from_spectrum",
    "v",
]
