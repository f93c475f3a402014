-- frontier: one row per model: its bounds at the compute-optimal selection (table
-- compute_optimal, D* = 20 N, the paper's N/D = G^2 = 0.05), side by side, in nats per token:
--   empirical_risk_h   R-hat_h, the float model's empirical risk (from the Thm 3.4 row)
--   headline           the certified bound to quote: the direct Freedman bound (Lemma 3.2 on
--                      the smoothed quantized model, tight loss range);  direct_freedman is the
--                      same number under the paper's name
--   decomposed         Thm 3.4 with its five terms (certified at its own delta)
--   azuma              Lotfi et al.'s baseline on the same code (certified at its own delta)
--   paper_recipe       Thm 3.4 the paper's way: nominal b*N bits, m = 10^4 pairs: NOT certified
--   headline_gap, paper_recipe_gap   bound - R-hat_h, both from the same R-hat_h
--   gap_ratio          headline_gap / paper_recipe_gap (< 1: the headline charges less)
-- and N, D, N/D (D/N in tokens_per_param; the rule's D* and D*/N beside them), the step, Σ
-- (Thm 3.4's), the headline's code length (bits and bits per parameter), the paper's nominal
-- b*N bits and the prequential K(h) bits of that checkpoint (an estimate; interpolated like the
-- other rows when the selection is).
-- certified is true when the model's compute-optimal checkpoint exists and its headline is
-- certified.  When D* falls between two checkpoints, the interpolated rows (linear in N/D,
-- step = the upper checkpoint, interpolated = true) are shown with certified = false; a model
-- with no bounded checkpoint yet has a row with NULL bounds and the reason in note.
WITH co AS (
    SELECT c.model, c.n_params, c.tokens_per_param, c.d_star, c.step, c.n_train_tokens,
           c.step_lo, c.step_hi, c.weight_hi, c.certified, c.note,
           c.step IS NULL AS use_interpolated,
           coalesce(c.step, c.step_hi) AS at_step
    FROM compute_optimal AS c
),
picked AS (
    SELECT DISTINCT ON (b.model, b.method)
           b.model, b.method, b.family, b.n_params, b.bound, b.certified, b.empirical_risk,
           b.delta, b.design, b.quantizer, b.bits, b.group_size, b.code_length_method,
           b.code_length_bits, b.sigma
    FROM bounds AS b
    JOIN co ON co.model = b.model AND b.step = co.at_step AND b.interpolated = co.use_interpolated
    ORDER BY b.model, b.method, b.computed_at DESC
),
w AS (
    SELECT model,
           max(bound) FILTER (WHERE method = 'headline') AS headline,
           bool_and(certified) FILTER (WHERE method = 'headline') AS headline_certified,
           max(empirical_risk) FILTER (WHERE method = 'headline') AS empirical_risk_sq,
           max(delta) FILTER (WHERE method = 'headline') AS delta,
           max(design) FILTER (WHERE method = 'headline') AS design,
           max(quantizer) FILTER (WHERE method = 'headline') AS quantizer,
           max(bits) FILTER (WHERE method = 'headline') AS bits,
           max(group_size) FILTER (WHERE method = 'headline') AS group_size,
           max(code_length_method) FILTER (WHERE method = 'headline') AS code_length_method,
           max(code_length_bits) FILTER (WHERE method = 'headline') AS code_length_bits,
           max(family) AS family,
           max(n_params) AS n_params,
           max(empirical_risk) FILTER (WHERE method = 'freedman_decomposed') AS empirical_risk_h,
           max(bound) FILTER (WHERE method = 'freedman_decomposed') AS decomposed,
           max(sigma) FILTER (WHERE method = 'freedman_decomposed') AS sigma,
           max(bound) FILTER (WHERE method = 'azuma') AS azuma,
           max(bound) FILTER (WHERE method = 'paper_recipe') AS paper_recipe,
           max(code_length_bits) FILTER (WHERE method = 'paper_recipe') AS nominal_bits,
           max(code_length_bits) FILTER (WHERE method = 'prequential') AS prequential_bits
    FROM picked
    GROUP BY model
),
-- K(h) of an interpolated selection when no interpolated prequential row exists: the same
-- linear interpolation in N/D between the bracketing checkpoints (weight_hi)
pre_bracket AS (
    SELECT co.model,
           (1 - co.weight_hi) * max(b.code_length_bits) FILTER (WHERE b.step = co.step_lo)
           + co.weight_hi * max(b.code_length_bits) FILTER (WHERE b.step = co.step_hi) AS bits
    FROM co
    JOIN bounds AS b ON b.model = co.model AND b.method = 'prequential' AND NOT b.interpolated
                    AND b.step IN (co.step_lo, co.step_hi)
    WHERE co.use_interpolated
    GROUP BY co.model, co.weight_hi
)
SELECT coalesce(m.family, w.family) AS family,
       co.model,
       coalesce(co.n_params, w.n_params, m.n_params) AS n_params,
       coalesce(co.n_train_tokens, co.d_star) AS n_train_tokens,
       coalesce(co.n_params, w.n_params, m.n_params)::float8
           / nullif(coalesce(co.n_train_tokens, co.d_star), 0) AS n_over_d,
       coalesce(co.n_train_tokens, co.d_star)::float8
           / nullif(coalesce(co.n_params, w.n_params, m.n_params), 0) AS tokens_per_param,
       co.d_star,
       co.tokens_per_param AS target_tokens_per_param,
       co.step,
       co.step_lo,
       co.step_hi,
       co.weight_hi,
       co.use_interpolated AND co.step_hi IS NOT NULL AS interpolated,
       w.delta,
       w.design,
       w.quantizer,
       w.bits,
       w.group_size,
       w.code_length_method,
       w.empirical_risk_h,
       w.empirical_risk_sq,
       w.headline,
       w.headline AS direct_freedman,
       w.decomposed,
       w.azuma,
       w.paper_recipe,
       w.headline - w.empirical_risk_h AS headline_gap,
       w.paper_recipe - w.empirical_risk_h AS paper_recipe_gap,
       (w.headline - w.empirical_risk_h) / nullif(w.paper_recipe - w.empirical_risk_h, 0) AS gap_ratio,
       w.sigma,
       w.code_length_bits,
       w.code_length_bits / nullif(coalesce(co.n_params, w.n_params, m.n_params), 0) AS bits_per_param,
       w.nominal_bits,
       coalesce(w.prequential_bits, pb.bits) AS prequential_bits,
       ln(m.vocab_size::float8) AS random_guess_loss,
       coalesce(co.certified AND NOT co.use_interpolated AND w.headline_certified, false) AS certified,
       co.note
FROM co
LEFT JOIN w ON w.model = co.model
LEFT JOIN pre_bracket AS pb ON pb.model = co.model
LEFT JOIN models AS m ON m.model = co.model
