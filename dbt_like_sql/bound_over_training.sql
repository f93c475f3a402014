-- bound_over_training: one row per model and training step: the headline bound (the certified
-- one to quote) and the checkpoint's measured losses, so the bound can be read against the loss
-- curve; beside them the diagnostics (Thm 3.4 decomposed, Azuma), the paper's recipe (not
-- certified) and the prequential K(h) (an estimate, bits) of the same checkpoint.
--   headline_empirical_risk  R-hat_sq, the smoothed quantized model's risk the headline starts from
--   empirical_risk_h         R-hat_h, the float model's (from the Thm 3.4 row)
--   next_tokens_loss         mean loss on the tokens the checkpoint is about to train on
--   held_sample_loss         mean loss on a fixed sample of positions
-- A step with losses but no bound has NULL bounds; a bound without losses has NULL losses.
-- Measured rows only (interpolated rows are left out).  at_compute_optimal marks the model's
-- certified compute-optimal checkpoint (table compute_optimal).
WITH losses AS (
    SELECT model,
           step,
           max(tokens_seen) AS tokens_seen,
           max(mean_loss) FILTER (WHERE eval_kind = 'next_tokens') AS next_tokens_loss,
           max(mean_loss) FILTER (WHERE eval_kind = 'held_sample') AS held_sample_loss
    FROM checkpoint_losses
    GROUP BY model, step
),
b AS (
    SELECT model,
           step,
           max(bound) FILTER (WHERE method = 'headline') AS headline,
           bool_and(certified) FILTER (WHERE method = 'headline') AS headline_certified,
           max(empirical_risk) FILTER (WHERE method = 'headline') AS headline_empirical_risk,
           max(empirical_risk) FILTER (WHERE method = 'freedman_decomposed') AS empirical_risk_h,
           max(bound) FILTER (WHERE method = 'freedman_decomposed') AS decomposed,
           max(bound) FILTER (WHERE method = 'azuma') AS azuma,
           max(bound) FILTER (WHERE method = 'paper_recipe') AS paper_recipe,
           max(code_length_bits) FILTER (WHERE method = 'prequential') AS prequential_bits,
           max(delta) FILTER (WHERE method = 'headline') AS delta,
           max(design) FILTER (WHERE method = 'headline') AS design,
           max(n_train_tokens) AS n_train_tokens
    FROM bounds
    WHERE NOT interpolated
    GROUP BY model, step
)
SELECT coalesce(b.model, l.model) AS model,
       m.family,
       m.n_params,
       coalesce(b.step, l.step) AS step,
       coalesce(c.tokens_seen, l.tokens_seen) AS tokens_seen,
       coalesce(b.n_train_tokens, c.n_train_tokens) AS n_train_tokens,
       coalesce(b.n_train_tokens, c.n_train_tokens)::float8 / nullif(m.n_params, 0) AS tokens_per_param,
       coalesce(co.step = coalesce(b.step, l.step), false) AS at_compute_optimal,
       b.headline,
       coalesce(b.headline_certified, false) AS headline_certified,
       b.headline_empirical_risk,
       b.empirical_risk_h,
       b.decomposed,
       b.azuma,
       b.paper_recipe,
       b.prequential_bits,
       b.delta,
       b.design,
       l.next_tokens_loss,
       l.held_sample_loss
FROM b
FULL JOIN losses AS l ON l.model = b.model AND l.step = b.step
LEFT JOIN models AS m ON m.model = coalesce(b.model, l.model)
LEFT JOIN checkpoints AS c ON c.model = coalesce(b.model, l.model)
                          AND c.step = coalesce(b.step, l.step)
LEFT JOIN compute_optimal AS co ON co.model = coalesce(b.model, l.model)
