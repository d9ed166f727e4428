"""The DR event log: one typed, durable record per DR fact (``types`` names them; ``log`` writes and reads)."""
