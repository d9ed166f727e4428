"""powervs-dr-broker: an Open Service Broker (OSB 2.17) for disaster recovery on IBM Power Virtual Server."""

__version__ = "0.1.0"
