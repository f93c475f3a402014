-- bound_over_training: per model and training step, the bounds (one row per bound
-- configuration) next to the checkpoint's measured losses, so a model's bound can be read
-- against its loss curve.  A step with losses but no bound appears once with method NULL; a
-- bound without losses has NULL losses.  tokens_seen comes from checkpoints, else from
-- checkpoint_losses.
WITH losses AS (
    SELECT model,
           step,
           max(tokens_seen) AS tokens_seen,
           max(mean_loss) FILTER (WHERE eval_kind = 'next_tokens') AS next_tokens_loss,
           max(mean_loss) FILTER (WHERE eval_kind = 'held_sample') AS held_sample_loss
    FROM checkpoint_losses
    GROUP BY model, step
)
SELECT coalesce(b.model, l.model) AS model,
       coalesce(b.step, l.step) AS step,
       coalesce(c.tokens_seen, l.tokens_seen) AS tokens_seen,
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
       b.empirical_risk,
       b.bound,
       l.next_tokens_loss,
       l.held_sample_loss
FROM bounds AS b
FULL JOIN losses AS l ON l.model = b.model AND l.step = b.step
LEFT JOIN checkpoints AS c ON c.model = coalesce(b.model, l.model)
                          AND c.step = coalesce(b.step, l.step)
