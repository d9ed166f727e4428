#!/usr/bin/env bash
# Deploy the broker to IBM Cloud Code Engine. Needs the ibmcloud CLI with the code-engine plugin, a selected
# project, and the image pushed to IBM Cloud Container Registry.
set -euo pipefail
: "${BROKER_PASSWORD:?set BROKER_PASSWORD}" "${DATABASE_URL:?set DATABASE_URL (postgresql://...)}"
IMAGE=${IMAGE:-icr.io/powervs-dr/powervs-dr-broker:0.1.0}
ibmcloud ce secret create --name powervs-dr-broker \
  --from-literal DRBROKER_USERNAME=platform --from-literal "DRBROKER_PASSWORD=${BROKER_PASSWORD}" \
  --from-literal "DRBROKER_DATABASE_URL=${DATABASE_URL}" 2>/dev/null || \
ibmcloud ce secret update --name powervs-dr-broker \
  --from-literal DRBROKER_USERNAME=platform --from-literal "DRBROKER_PASSWORD=${BROKER_PASSWORD}" \
  --from-literal "DRBROKER_DATABASE_URL=${DATABASE_URL}"
ibmcloud ce job create --name powervs-dr-broker-migrate --image "$IMAGE" --command drbroker --argument db \
  --argument upgrade --env-from-secret powervs-dr-broker 2>/dev/null || true
ibmcloud ce jobrun submit --job powervs-dr-broker-migrate --wait
ibmcloud ce application create --name powervs-dr-broker --image "$IMAGE" --port 8080 \
  --command drbroker --argument serve --argument --host --argument 0.0.0.0 --argument --port --argument 8080 \
  --env-from-secret powervs-dr-broker --min-scale 2 --max-scale 4 2>/dev/null || \
ibmcloud ce application update --name powervs-dr-broker --image "$IMAGE"
