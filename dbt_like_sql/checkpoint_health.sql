-- checkpoint_health: one row per model: how many of its checkpoints are registered, how many
-- passed the integrity checks (status 'ok') and how many are quarantined, which steps those
-- are and why ("step 3000: <reason>; ..."), and when the checks last ran.  Models without
-- checkpoints and checkpoints of unregistered models are both listed.
SELECT coalesce(m.model, c.model) AS model,
       m.family,
       count(c.step) AS n_checkpoints,
       count(c.step) FILTER (WHERE c.status = 'ok') AS n_ok,
       count(c.step) FILTER (WHERE c.status = 'quarantined') AS n_quarantined,
       min(c.step) AS first_step,
       max(c.step) AS last_step,
       max(c.checked_at) AS last_checked_at,
       array_agg(c.step ORDER BY c.step) FILTER (WHERE c.status = 'quarantined') AS quarantined_steps,
       string_agg('step ' || c.step || ': ' || coalesce(c.quarantine_reason, '(no reason recorded)'),
                  '; ' ORDER BY c.step) FILTER (WHERE c.status = 'quarantined') AS quarantine_reasons
FROM models AS m
FULL JOIN checkpoints AS c ON c.model = m.model
GROUP BY coalesce(m.model, c.model), m.family
