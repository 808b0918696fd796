"""Helpers every stage shares: reading settings (:mod:`.settings`) and showing dates (:mod:`.dates`).

Nothing here knows a stage of the pipeline; every stage may import it.
"""
