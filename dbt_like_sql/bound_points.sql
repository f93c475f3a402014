-- bound_points: every row of `bounds` with what the figures put on their axes: the model's size
-- N (parameters: the row's n_params, else models.n_params), the training tokens D behind the
-- checkpoint, tokens per parameter D/N, the checkpoint's tokens_seen and the vocabulary size V
-- (log V is the random-guess loss).
--
-- nearest_compute_optimal marks, for each model and bound configuration, the measured
-- (non-interpolated) row whose D/N is closest, on a log scale, to the paper's compute-optimal
-- ratio D/N = 20 (N/D = G^2 = 0.05); ties go to the earlier step.  It is a display choice for
-- plots across sizes, not part of any certificate: picking the reported row after seeing the
-- bounds would cost union-bound nats (docs/pipeline.md).
WITH pts AS (
    SELECT b.model,
           m.family,
           b.step,
           c.tokens_seen,
           b.method,
           b.quantizer,
           b.bits,
           b.group_size,
           b.code_length_method,
           b.alpha,
           b.loss_range_method,
           b.delta,
           b.sample,
           b.n_sample,
           b.subsample_method,
           b.grid_size,
           b.interpolated,
           b.certified,
           coalesce(b.n_params, m.n_params) AS n_params,
           b.n_train_tokens,
           b.n_train_tokens::float8 / nullif(coalesce(b.n_params, m.n_params), 0) AS tokens_per_param,
           m.vocab_size,
           b.code_length_bits,
           b.complexity,
           b.sigma,
           b.empirical_risk,
           b.random_guess_term,
           b.loss_variation_term,
           b.smoothing_term,
           b.quantization_gap,
           b.subsample_term,
           b.choice_cost_nats,
           b.bound,
           b.computed_at
    FROM bounds AS b
    LEFT JOIN models AS m ON m.model = b.model
    LEFT JOIN checkpoints AS c ON c.model = b.model AND c.step = b.step
)
SELECT pts.*,
       (NOT pts.interpolated AND pts.tokens_per_param > 0 AND row_number() OVER (
            PARTITION BY pts.model, pts.method, pts.quantizer, pts.bits, pts.group_size,
                         pts.code_length_method, pts.loss_range_method, pts.delta, pts.sample,
                         pts.n_sample, pts.subsample_method, pts.grid_size, pts.interpolated,
                         (pts.tokens_per_param > 0)
            ORDER BY abs(ln(pts.tokens_per_param / 20.0)), pts.step
        ) = 1) AS nearest_compute_optimal
FROM pts
