"""The real IBM Cloud backend: PowerVS, Key Protect, IAM, resource controller, global catalog, DR Automation
and usage metering, over REST through ibm-cloud-sdk-core. ``errors`` is the one boundary where IBM's HTTP
and transport errors become domain errors."""
