-- scaling_fits: power_law_fits in readable form, one row per fit: the formula with its fitted
-- numbers (4 significant digits), each parameter with its 95% interval, R^2 and the number of
-- points.  Forms: 'power' is y = a * N^c (OLS on log-log); 'offset_power' is
-- y = a + b * N^-c (nonlinear least squares).  N is the model size (parameters).  The
-- parameters, and their interval ends, are also given as numbers (a, a_low, a_high, ...).
WITH vals AS (
    SELECT f.quantity,
           f.form,
           f.selection,
           k.name,
           (f.params ->> k.name)::float8 AS est,
           (f.ci_low ->> k.name)::float8 AS low,
           (f.ci_high ->> k.name)::float8 AS high
    FROM power_law_fits AS f
    CROSS JOIN LATERAL jsonb_object_keys(f.params) AS k (name)
),
txt AS (
    SELECT v.quantity,
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
                ELSE trim_scale(round(x.val::numeric,
                                      (3 - floor(log(abs(x.val)::numeric)))::int))::text
           END AS shown
    FROM vals AS v
    CROSS JOIN LATERAL (VALUES ('est', v.est), ('low', v.low), ('high', v.high)) AS x (which, val)
),
per_param AS (
    SELECT quantity,
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
    GROUP BY quantity, form, selection, name
),
per_fit AS (
    SELECT quantity,
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
    GROUP BY quantity, form, selection
)
SELECT f.quantity,
       f.form,
       f.selection,
       CASE f.form
           WHEN 'power' THEN 'y = a·N^c'
           WHEN 'offset_power' THEN 'y = a + b·N^−c'
       END AS form_text,
       (CASE f.quantity WHEN 'sigma' THEN 'Σ' ELSE f.quantity END) || '(N) = '
       || CASE f.form
              WHEN 'power' THEN coalesce(p.a_text, '?') || '·N^' || replace(coalesce(p.c_text, '?'), '-', '−')
              WHEN 'offset_power' THEN coalesce(p.a_text, '?') || ' + ' || coalesce(p.b_text, '?')
                                       || '·N^−' || coalesce(p.c_text, '?')
          END AS formula,
       p.params_95ci,
       p.a, p.a_low, p.a_high,
       p.b, p.b_low, p.b_high,
       p.c, p.c_low, p.c_high,
       f.r2,
       f.n_points,
       f.certified,
       f.computed_at
FROM power_law_fits AS f
LEFT JOIN per_fit AS p ON p.quantity = f.quantity AND p.form = f.form AND p.selection = f.selection
