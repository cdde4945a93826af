"""Logs -> sequences: reading the sources, cleaning (bad rows quarantined with a reason), each
user's time-ordered sequence, and the synthetic log with planted segments. Knows nothing
about Ray (jobs/ingest.py runs these functions over Ray Data blocks)."""
