"""``drbroker client``: an OSB client for any broker (this one or another)."""
