"""DR reports (``drbroker report``, the dashboard's report page): RPO compliance, rehearsals with their RTO,
moves, failures and open risks over a period, as JSON, CSV or a printable HTML page (docs/reports.md)."""
