"""Scaling-law fits across each family's model sizes (``<family>/scaling_fits``, docs/sql.md).

``assets.py``: one unpartitioned asset per registered family; it reads the family's
compute-optimal selections and bounds, fits the pre-declared scaling laws (``fits/scaling.py``)
and replaces the family's rows of ``power_law_fits`` in one transaction.
"""
