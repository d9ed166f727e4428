"""Scheduled rehearsals: the ``rehearsal`` parameter (``spec``), the per-instance schedule rows kept in step
with the instance's parameters (``sync``, an engine listener), and the job that fires due rehearsals once across
any number of replicas (``scheduler``)."""
