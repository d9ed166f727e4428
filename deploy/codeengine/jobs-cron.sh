#!/usr/bin/env bash
# The broker's scheduled work from outside (docs/evidence.md, "Scheduled rehearsals"): a Code Engine job that runs
# `drbroker jobs run-due` once (every DR-evidence job's due work: rehearsals, ...) and a Periodic timer (cron)
# subscription that submits it. The serving replicas run the same jobs themselves; this only makes sure due work
# starts when no replica is up, or when they are scaled to zero. Due rows are claimed with leases, so the job and
# the replicas never fire anything twice. The rehearsal operations it queues are run by the replicas' workers.
# Needs the secret deploy.sh creates. Variables: IMAGE, APP (as deploy.sh), RUN_DUE_SCHEDULE (crontab syntax, UTC;
# default every 5 minutes), ORCHESTRATOR (the app's DRBROKER_ORCHESTRATOR, default simulated).
set -euo pipefail
IMAGE=${IMAGE:-icr.io/powervs-dr/powervs-dr-broker:0.1.0}
APP=${APP:-powervs-dr-broker}
RUN_DUE_SCHEDULE=${RUN_DUE_SCHEDULE:-*/5 * * * *}
JOB="$APP-run-due"

JOB_ARGS=(--name "$JOB" --image "$IMAGE" --command drbroker --argument jobs --argument run-due --argument --json
  --env-from-secret "$APP" --env "DRBROKER_ORCHESTRATOR=${ORCHESTRATOR:-simulated}"
  --maxexecutiontime 600 --retrylimit 1)
ibmcloud ce job create "${JOB_ARGS[@]}" 2>/dev/null || \
  ibmcloud ce job update --name "$JOB" --image "$IMAGE"

ibmcloud ce subscription cron create --name "$JOB" --destination-type job --destination "$JOB" \
  --schedule "$RUN_DUE_SCHEDULE" 2>/dev/null || \
  ibmcloud ce subscription cron update --name "$JOB" --schedule "$RUN_DUE_SCHEDULE"
echo "job $JOB runs \`drbroker jobs run-due\` on the schedule '$RUN_DUE_SCHEDULE' (UTC)"
