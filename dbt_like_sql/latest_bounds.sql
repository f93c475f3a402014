-- latest_bounds: for every model and bound configuration, the bound at the latest training step
-- that has one (measured rows only: interpolated rows are left out), with its role
-- (headline / diagnostic / reference / estimate) and the checkpoint's tokens_seen when the
-- checkpoints table knows it.
SELECT DISTINCT ON (
           b.model, b.method, b.quantizer, b.bits, b.group_size, b.code_length_method, b.alpha,
           b.loss_range_method, b.delta, b.sample, b.n_sample, b.subsample_method, b.grid_size,
           b.design, b.quantize_embeddings, b.calibration, b.delta_split_share
       )
       b.model,
       b.family,
       b.step,
       c.tokens_seen,
       b.method,
       b.role,
       b.design,
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
       b.empirical_risk,
       b.complexity,
       b.bound,
       b.certified,
       b.computed_at
FROM bounds AS b
LEFT JOIN checkpoints AS c ON c.model = b.model AND c.step = b.step
WHERE NOT b.interpolated
ORDER BY b.model, b.method, b.quantizer, b.bits, b.group_size, b.code_length_method, b.alpha,
         b.loss_range_method, b.delta, b.sample, b.n_sample, b.subsample_method, b.grid_size,
         b.design, b.quantize_embeddings, b.calibration, b.delta_split_share, b.step DESC
