"""A fake IBM Cloud for tests and demos: a real HTTP server speaking the documented paths, bodies, status
codes and error shapes of the APIs the ibmcloud backend uses (see ``app``), with in-memory state seeded with
the simulated backend's demo account and a ``/_fake`` admin API for fault injection."""
