"""Helpers every stage shares: reading settings (:mod:`.settings`) and showing dates (:mod:`.dates`).

Also the process-level helpers the jobs share: keeping freed memory (:mod:`.allocator`), importing
ahead on a background thread (:mod:`.imports`).  Nothing here knows a stage of the pipeline; every stage
may import it.
"""
