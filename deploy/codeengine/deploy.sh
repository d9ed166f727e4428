#!/usr/bin/env bash
# Deploy the broker to IBM Cloud Code Engine (docs/deploying.md). Needs the ibmcloud CLI with the code-engine
# plugin, a selected project, the image in IBM Cloud Container Registry, and these variables:
#   BROKER_PASSWORD, DATABASE_URL (postgresql://...), DASHBOARD_SECRET (the same for every instance, e.g.
#   openssl rand -base64 48), KEK_INSTANCE_ID, KEK_ROOT_KEY_ID, KEK_APIKEY (a Key Protect root key: the one
#   key-encryption key of every instance), optionally KEK_KEYPROTECT_URL, IMAGE, APP.
set -euo pipefail
: "${BROKER_PASSWORD:?}" "${DATABASE_URL:?}" "${DASHBOARD_SECRET:?}" "${KEK_INSTANCE_ID:?}" "${KEK_ROOT_KEY_ID:?}" \
  "${KEK_APIKEY:?}"
IMAGE=${IMAGE:-icr.io/powervs-dr/powervs-dr-broker:0.1.0}
APP=${APP:-powervs-dr-broker}
SECRET_ARGS=(--name "$APP"
  --from-literal DRBROKER_USERNAME=platform
  --from-literal "DRBROKER_PASSWORD=${BROKER_PASSWORD}"
  --from-literal "DRBROKER_DATABASE_URL=${DATABASE_URL}"
  --from-literal "DRBROKER_DASHBOARD_SECRET=${DASHBOARD_SECRET}"
  --from-literal DRBROKER_KEK=keyprotect
  --from-literal "DRBROKER_KEK_KEYPROTECT_URL=${KEK_KEYPROTECT_URL:-https://us-south.kms.cloud.ibm.com}"
  --from-literal "DRBROKER_KEK_INSTANCE_ID=${KEK_INSTANCE_ID}"
  --from-literal "DRBROKER_KEK_ROOT_KEY_ID=${KEK_ROOT_KEY_ID}"
  --from-literal "DRBROKER_KEK_APIKEY=${KEK_APIKEY}")
ibmcloud ce secret create "${SECRET_ARGS[@]}" 2>/dev/null || ibmcloud ce secret update "${SECRET_ARGS[@]}"

# Migrations run here, once, before any instance of the new image serves (an instance refuses to start on a
# schema that is not current).
ibmcloud ce job create --name "$APP-migrate" --image "$IMAGE" --command drbroker --argument db \
  --argument upgrade --env-from-secret "$APP" 2>/dev/null || \
  ibmcloud ce job update --name "$APP-migrate" --image "$IMAGE"
ibmcloud ce jobrun submit --job "$APP-migrate" --wait

APP_ARGS=(--name "$APP" --image "$IMAGE" --port 8080
  --command drbroker --argument serve --argument --host --argument 0.0.0.0 --argument --port --argument 8080
  --argument --workers --argument 2
  --env-from-secret "$APP" --env DRBROKER_ORCHESTRATOR=simulated --min-scale 2 --max-scale 4)
ibmcloud ce application create "${APP_ARGS[@]}" 2>/dev/null || \
  ibmcloud ce application update --name "$APP" --image "$IMAGE"
# Signed dashboard links need the app's URL, which exists only now.
URL=$(ibmcloud ce application get --name "$APP" --output url)
ibmcloud ce application update --name "$APP" --env "DRBROKER_PUBLIC_URL=${URL}"
echo "broker URL: $URL (register it with basic auth platform / \$BROKER_PASSWORD)"
# Scheduled DR work (rehearsals, ...) also from a Code Engine cron, when no replica runs it.
"$(dirname "${BASH_SOURCE[0]}")/jobs-cron.sh"
