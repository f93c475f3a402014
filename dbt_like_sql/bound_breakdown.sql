-- bound_breakdown: every bound row split into its terms, one row per (bound row, term), with
-- each term's share of the bound (value / bound).  Terms in nats per token:
--   empirical_risk       R-hat: the float model's R-hat_h on freedman_decomposed and
--                        paper_recipe rows; the smoothed quantized model's R-hat_sq on headline
--                        rows; Azuma's smoothed mean on azuma rows
--   random_guess_term    C log V                  (Thm 3.4: freedman_decomposed, paper_recipe)
--   range_term           Delta * C, Delta = the tight loss range (headline rows: Lemma 3.2's
--                        bound is R-hat_sq + Delta C + Sigma sqrt(C) + subsample term)
--   loss_variation_term  Sigma sqrt(C), or Azuma's width term on azuma rows
--   smoothing_term       sqrt(2C)                 (Thm 3.4: freedman_decomposed, paper_recipe)
--   quantization_gap     R-hat_q - R-hat_h        (a summand on freedman_decomposed and
--                        paper_recipe rows only: the other methods already bound the quantized
--                        model's risk)
--   subsample_term       the price of certifying all D tokens from a sample (0 when every
--                        training target is evaluated)
--   remainder            bound minus the summands above; listed only when it is not zero to
--                        rounding (1e-9 relative), e.g. on interpolated rows, where a product
--                        of interpolated numbers is not the interpolated product
-- and choice_cost_nats (in nats, not per token; the post-hoc choices paid inside C; no share).
-- additive = whether the term is one of the summands of that row's bound.  Prequential rows
-- (K(h) estimates, no bound) list their terms with additive = false and share NULL.
SELECT p.model,
       p.family,
       p.n_params,
       p.step,
       p.tokens_seen,
       p.n_train_tokens,
       p.tokens_per_param,
       p.at_compute_optimal,
       p.method,
       p.role,
       p.design,
       p.quantizer,
       p.bits,
       p.group_size,
       p.code_length_method,
       p.alpha,
       p.loss_range_method,
       p.delta,
       p.sample,
       p.n_sample,
       p.subsample_method,
       p.grid_size,
       p.interpolated,
       p.certified,
       t.term_order,
       t.term,
       t.unit,
       t.additive AND p.bound IS NOT NULL AS additive,
       t.value,
       CASE WHEN t.additive THEN t.value / nullif(p.bound, 0) END AS share,
       p.bound
FROM bound_points AS p
CROSS JOIN LATERAL (
    SELECT p.method IN ('freedman_decomposed', 'paper_recipe') AS gap_adds,
           CASE WHEN p.method = 'headline' THEN p.loss_range * p.complexity END AS range_term
) AS k
CROSS JOIN LATERAL (
    SELECT coalesce(p.empirical_risk, 0) + coalesce(p.random_guess_term, 0)
           + coalesce(k.range_term, 0) + coalesce(p.loss_variation_term, 0)
           + coalesce(p.smoothing_term, 0)
           + CASE WHEN k.gap_adds THEN coalesce(p.quantization_gap, 0) ELSE 0 END
           + coalesce(p.subsample_term, 0) AS additive_sum
) AS s
CROSS JOIN LATERAL (
    VALUES (1, 'empirical_risk', 'nats/token', true, p.empirical_risk),
           (2, 'random_guess_term', 'nats/token', true, p.random_guess_term),
           (3, 'range_term', 'nats/token', true, k.range_term),
           (4, 'loss_variation_term', 'nats/token', true, p.loss_variation_term),
           (5, 'smoothing_term', 'nats/token', true, p.smoothing_term),
           (6, 'quantization_gap', 'nats/token', k.gap_adds, p.quantization_gap),
           (7, 'subsample_term', 'nats/token', true, p.subsample_term),
           (8, 'remainder', 'nats/token', true,
               CASE WHEN abs(p.bound - s.additive_sum) > 1e-9 * greatest(abs(p.bound), 1.0)
                    THEN p.bound - s.additive_sum END),
           (9, 'choice_cost_nats', 'nats', false, p.choice_cost_nats)
) AS t (term_order, term, unit, additive, value)
WHERE t.value IS NOT NULL
