-- bound_vs_loss: how far each measured bound sits above the empirical risk it certifies, across
-- model sizes: gap = bound - empirical_risk (nats per token) and gap / bound, with N, D, D/N,
-- the row's role (headline / diagnostic / reference), the random-guess loss log V, and the
-- checkpoint's measured losses from checkpoint_losses (next_tokens_loss: mean loss on the
-- tokens it is about to train on; held_sample_loss: on a fixed sample).  Filter on
-- at_compute_optimal for each size's compute-optimal checkpoint (the paper's Fig. 2 left; the
-- view frontier puts those side by side).  Interpolated and prequential rows (no measured
-- bound) are left out.
WITH losses AS (
    SELECT model,
           step,
           max(mean_loss) FILTER (WHERE eval_kind = 'next_tokens') AS next_tokens_loss,
           max(mean_loss) FILTER (WHERE eval_kind = 'held_sample') AS held_sample_loss
    FROM checkpoint_losses
    GROUP BY model, step
)
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
       p.certified,
       p.empirical_risk,
       p.bound,
       p.bound - p.empirical_risk AS gap,
       (p.bound - p.empirical_risk) / nullif(p.bound, 0) AS gap_share,
       ln(p.vocab_size::float8) AS random_guess_loss,
       l.next_tokens_loss,
       l.held_sample_loss
FROM bound_points AS p
LEFT JOIN losses AS l ON l.model = p.model AND l.step = p.step
WHERE NOT p.interpolated AND p.bound IS NOT NULL
