-- bound_breakdown: every bound row split into its terms, one row per (bound row, term), with
-- each term's share of the bound (value / bound).  Terms in nats per token:
--   empirical_risk       R-hat (the float model's on freedman_decomposed rows, the smoothed
--                        quantized model's on freedman_direct and azuma rows)
--   random_guess_term    C log V                       (Thm 3.4; freedman_decomposed only)
--   loss_variation_term  Sigma sqrt(C), or Azuma's width term on azuma rows
--   smoothing_term       sqrt(2C)                      (Thm 3.4; freedman_decomposed only)
--   quantization_gap     R-hat_q - R-hat_h             (additive on freedman_decomposed rows
--                        only: the other methods already bound the quantized model's risk)
--   subsample_term       the price of certifying all D tokens from m sampled pairs
--   remainder            bound minus the additive terms above (e.g. Delta C / s on
--                        freedman_direct rows); left out when it is zero to rounding
-- and choice_cost_nats (nats, not per-token nats; the post-hoc choices paid inside C; no share).
-- additive = whether the term is one of the summands of that row's bound.
SELECT p.model,
       p.n_params,
       p.step,
       p.tokens_seen,
       p.n_train_tokens,
       p.tokens_per_param,
       p.nearest_compute_optimal,
       p.method,
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
       t.additive,
       t.value,
       CASE WHEN t.additive THEN t.value / nullif(p.bound, 0) END AS share,
       p.bound
FROM bound_points AS p
CROSS JOIN LATERAL (
    SELECT coalesce(p.empirical_risk, 0) + coalesce(p.random_guess_term, 0)
           + coalesce(p.loss_variation_term, 0) + coalesce(p.smoothing_term, 0)
           + CASE WHEN p.method = 'freedman_decomposed' THEN coalesce(p.quantization_gap, 0) ELSE 0 END
           + coalesce(p.subsample_term, 0) AS additive_sum
) AS s
CROSS JOIN LATERAL (
    VALUES (1, 'empirical_risk', 'nats/token', true, p.empirical_risk),
           (2, 'random_guess_term', 'nats/token', true, p.random_guess_term),
           (3, 'loss_variation_term', 'nats/token', true, p.loss_variation_term),
           (4, 'smoothing_term', 'nats/token', true, p.smoothing_term),
           (5, 'quantization_gap', 'nats/token', p.method = 'freedman_decomposed', p.quantization_gap),
           (6, 'subsample_term', 'nats/token', true, p.subsample_term),
           (7, 'remainder', 'nats/token', true,
               CASE WHEN abs(p.bound - s.additive_sum) > 1e-9 * greatest(abs(p.bound), 1.0)
                    THEN p.bound - s.additive_sum END),
           (8, 'choice_cost_nats', 'nats', false, p.choice_cost_nats)
) AS t (term_order, term, unit, additive, value)
WHERE t.value IS NOT NULL
