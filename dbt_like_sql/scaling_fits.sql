-- scaling_fits: power_law_fits in readable form, one row per family and fit: the formula with
-- its fitted numbers (4 significant digits; scientific notation below 1e-3 and from 1e7), each
-- parameter with its 95% interval, R^2 and the number of points (model sizes).  Forms: 'power' is y = a * N^c (OLS on log-log);
-- 'offset_power' is y = a + b * N^-c (nonlinear least squares).  N is the model size
-- (parameters); the points are each size's compute-optimal selection (selection
-- 'compute_optimal', fits/scaling.py).  status: 'ok'; 'not_enough_sizes' (a record, not a fit:
-- too few sizes for an interval) or 'not_fitted' (note says why; formula NULL).  Fits are
-- descriptive: certified = false.  The parameters and interval ends are also numbers (a, a_low,
-- a_high, ...); extrapolated_* is the fit at extrapolated_n (10x the largest N) with the 95%
-- interval of the fitted curve (ci) and of a new observation (pi).
WITH vals AS (
    SELECT f.family,
           f.quantity,
           f.form,
           f.selection,
           k.name,
           (f.params ->> k.name)::float8 AS est,
           (f.ci_low ->> k.name)::float8 AS low,
           (f.ci_high ->> k.name)::float8 AS high
    FROM power_law_fits AS f
    CROSS JOIN LATERAL jsonb_object_keys(CASE WHEN jsonb_typeof(f.params) = 'object'
                                              THEN f.params END) AS k (name)
),
txt AS (
    SELECT v.family,
           v.quantity,
           v.form,
           v.selection,
           v.name,
           v.est,
           v.low,
           v.high,
           x.which,
           CASE WHEN x.val IS NULL THEN NULL
                WHEN x.val = 0 THEN '0'
                WHEN x.val = 'NaN'::float8 OR abs(x.val) = 'Infinity'::float8 THEN x.val::text
                WHEN abs(x.val) < 1e-3 OR abs(x.val) >= 1e7
                    THEN replace(trim(to_char(x.val, '9.999EEEE')), '.000e', 'e')
                ELSE trim_scale(round(x.val::numeric,
                                      (3 - floor(log(abs(x.val)::numeric)))::int))::text
           END AS shown
    FROM vals AS v
    CROSS JOIN LATERAL (VALUES ('est', v.est), ('low', v.low), ('high', v.high)) AS x (which, val)
),
per_param AS (
    SELECT family,
           quantity,
           form,
           selection,
           name,
           max(est) AS est,
           max(low) AS low,
           max(high) AS high,
           max(shown) FILTER (WHERE which = 'est') AS est_text,
           name || ' = ' || coalesce(max(shown) FILTER (WHERE which = 'est'), '?')
               || ' [' || coalesce(max(shown) FILTER (WHERE which = 'low'), '?') || ', '
               || coalesce(max(shown) FILTER (WHERE which = 'high'), '?') || ']' AS with_interval
    FROM txt
    GROUP BY family, quantity, form, selection, name
),
per_fit AS (
    SELECT family,
           quantity,
           form,
           selection,
           max(est_text) FILTER (WHERE name = 'a') AS a_text,
           max(est_text) FILTER (WHERE name = 'b') AS b_text,
           max(est_text) FILTER (WHERE name = 'c') AS c_text,
           max(est) FILTER (WHERE name = 'a') AS a,
           max(low) FILTER (WHERE name = 'a') AS a_low,
           max(high) FILTER (WHERE name = 'a') AS a_high,
           max(est) FILTER (WHERE name = 'b') AS b,
           max(low) FILTER (WHERE name = 'b') AS b_low,
           max(high) FILTER (WHERE name = 'b') AS b_high,
           max(est) FILTER (WHERE name = 'c') AS c,
           max(low) FILTER (WHERE name = 'c') AS c_low,
           max(high) FILTER (WHERE name = 'c') AS c_high,
           string_agg(with_interval, ', ' ORDER BY name) AS params_95ci
    FROM per_param
    GROUP BY family, quantity, form, selection
)
SELECT f.family,
       f.quantity,
       f.form,
       f.selection,
       f.status,
       f.note,
       f.unit,
       f.source,
       CASE f.form
           WHEN 'power' THEN 'y = a·N^c'
           WHEN 'offset_power' THEN 'y = a + b·N^−c'
       END AS form_text,
       CASE WHEN f.status = 'ok' THEN
           (CASE f.quantity WHEN 'sigma' THEN 'Σ'
                            WHEN 'prequential_bits' THEN 'K(h)'
                            WHEN 'empirical_risk' THEN 'R̂_h'
                            ELSE f.quantity END) || '(N) = '
           || CASE f.form
                  WHEN 'power' THEN coalesce(p.a_text, '?') || '·N^' || replace(coalesce(p.c_text, '?'), '-', '−')
                  WHEN 'offset_power' THEN coalesce(p.a_text, '?')
                                           || CASE WHEN p.b < 0 THEN ' − ' || ltrim(p.b_text, '-')
                                                   ELSE ' + ' || coalesce(p.b_text, '?') END
                                           || '·N^−' || coalesce(p.c_text, '?')
              END
       END AS formula,
       p.params_95ci,
       p.a, p.a_low, p.a_high,
       p.b, p.b_low, p.b_high,
       p.c, p.c_low, p.c_high,
       f.r2,
       f.n_points,
       (f.extrapolation ->> 'n_params')::float8 AS extrapolated_n,
       (f.extrapolation ->> 'y')::float8 AS extrapolated_value,
       (f.extrapolation ->> 'ci_low')::float8 AS extrapolated_ci_low,
       (f.extrapolation ->> 'ci_high')::float8 AS extrapolated_ci_high,
       (f.extrapolation ->> 'pi_low')::float8 AS extrapolated_pi_low,
       (f.extrapolation ->> 'pi_high')::float8 AS extrapolated_pi_high,
       f.certified,
       f.computed_at
FROM power_law_fits AS f
LEFT JOIN per_fit AS p ON p.family = f.family AND p.quantity = f.quantity AND p.form = f.form
                      AND p.selection = f.selection
