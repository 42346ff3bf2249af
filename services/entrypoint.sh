#!/bin/sh
# The image's entry point: SERVICE picks one of the five services (Terraform sets it per Cloud Run
# service). The container starts as root; this script decides who the service runs as:
#   - api and tool_invoker run stored functions (the api's execute-for-testing route, the
#     invoker's tool calls). The sandbox drops every call to an unprivileged uid per slot with
#     `setpriv --reuid`, which needs CAP_SETUID, so these two keep root (docs/functions.md,
#     "Deploying"). User code never runs as root: it runs as uid 61000+ inside bubblewrap.
#   - the other three run no user code and are started as uid 10001 with no capabilities.
# Started by someone who is not root already (e.g. `docker run --user`), it changes nothing:
# the sandbox then fails closed with `sandbox_unavailable`, as it says at start-up.
set -eu
service="${SERVICE:-}"
case "$service" in
  api | tool_invoker) keeps_root=yes ;;
  run_executor | handoff_broker | context_snapshotter) keeps_root=no ;;
  *)
    echo "cloudagents: set SERVICE to api, run_executor, tool_invoker, handoff_broker or context_snapshotter (got '${service}')" >&2
    exit 64
    ;;
esac
port="${PORT:-8080}"
drop=""
if [ "$(id -u)" = 0 ] && [ "$keeps_root" = no ]; then
  drop="setpriv --reuid=10001 --regid=10001 --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs --"
fi
if [ "$service" = api ]; then
  # The api runs the functions-framework app through uvicorn's factory, which adds the
  # WebSocket route (functions-framework's own server routes HTTP only).
  # shellcheck disable=SC2086
  exec $drop uvicorn --factory --no-access-log --app-dir services/api main:asgi_app --host 0.0.0.0 --port "$port"
fi
# shellcheck disable=SC2086
exec $drop functions-framework --source "services/${service}/main.py" --target "$service" --asgi --port "$port"
