-- bound_points: every row of `bounds` with what the figures put on their axes: the model's size
-- N (parameters: the row's n_params, else models.n_params), the training tokens D behind the
-- checkpoint, tokens per parameter D/N and its inverse N/D, the checkpoint's tokens_seen, the
-- vocabulary size V (log V is the random-guess loss), the family, and the row's role:
--   headline    the one certified bound to quote (direct Freedman, Lemma 3.2)
--   diagnostic  certified, each at its own delta (Thm 3.4 decomposed, Azuma)
--   reference   the paper's recipe (nominal b*N bits): NOT certified
--   estimate    interpolated rows and prequential K(h) rows: NOT certified
--
-- at_compute_optimal marks the rows at the model's compute-optimal selection (table
-- compute_optimal, D* = 20 N): the measured rows of its certified checkpoint, or, when D* falls
-- between two checkpoints, the interpolated rows (certified = false).  The selection is a rule
-- fixed before any bound is seen, so filtering on it costs nothing.
WITH pts AS (
    SELECT b.model,
           coalesce(b.family, m.family) AS family,
           b.step,
           c.tokens_seen,
           b.method,
           b.role,
           b.design,
           b.quantizer,
           b.bits,
           b.group_size,
           b.quantize_embeddings,
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
           coalesce(b.n_params, m.n_params)::float8 / nullif(b.n_train_tokens, 0) AS n_over_d,
           m.vocab_size,
           b.code_length_bits,
           b.code_length_bits / nullif(coalesce(b.n_params, m.n_params), 0) AS bits_per_param,
           b.loss_range,
           b.complexity,
           b.sigma,
           b.s_star,
           b.empirical_risk,
           b.random_guess_term,
           b.loss_variation_term,
           b.smoothing_term,
           b.quantization_gap,
           b.subsample_term,
           b.choice_cost_nats,
           b.bound,
           b.computed_at,
           coalesce(
               (NOT b.interpolated AND co.step IS NOT NULL AND b.step = co.step)
               OR (b.interpolated AND co.step IS NULL AND b.step = co.step_hi),
               false) AS at_compute_optimal
    FROM bounds AS b
    LEFT JOIN models AS m ON m.model = b.model
    LEFT JOIN checkpoints AS c ON c.model = b.model AND c.step = b.step
    LEFT JOIN compute_optimal AS co ON co.model = b.model
)
SELECT * FROM pts
