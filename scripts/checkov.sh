#!/usr/bin/env bash
# Static security checks over terraform/ with checkov, run from its own virtualenv
# (.venv-checkov): checkov pins many libraries that must not mix with the project's .venv.
#
# Every finding is either fixed or skipped inline, next to its resource, with
# `#checkov:skip=CKV_...:reason`.
#
# Without arguments (`make test`) it scans two configurations: terraform/ as committed (no graph
# node types), then a scratch copy whose topology.auto.tfvars.json is generated with example
# graph node types (GRAPH_PUSH_NODE_TYPES, GRAPH_PULL_NODE_TYPES below: the graph worker service,
# its queues, the pull node types' topics). It exits non-zero if a check fails in either, or if
# the graph configuration does not scan more resources than the default one: checkov says
# nothing when it cannot render the module's for_each maps, it just scans fewer resources.
# With arguments it makes one run over terraform/ and passes them to checkov, e.g.
# `bash scripts/checkov.sh --output json`.
set -euo pipefail

CHECKOV_VERSION="3.3.30"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROOT}/.venv-checkov"
PYTHON="${PYTHON:-python3}"
STAMP="${VENV}/.installed-checkov-${CHECKOV_VERSION}"
# The project's virtualenv (make install), which runs the topology generator.
PROJECT_PYTHON="${PROJECT_PYTHON:-${ROOT}/.venv/bin/python}"
GRAPH_PUSH_NODE_TYPES="summarize:4,agent"
GRAPH_PULL_NODE_TYPES="researcher"

if [[ ! -f "${STAMP}" ]]; then
  echo "==> creating ${VENV#"${ROOT}"/} with checkov==${CHECKOV_VERSION} (first run only, a minute or two)"
  rm -rf "${VENV}"
  "${PYTHON}" -m venv "${VENV}"
  # One line per package as pip resolves and installs, so a slow install shows progress.
  set +e
  "${VENV}/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
    "checkov==${CHECKOV_VERSION}" 2>&1 \
    | grep --line-buffered -E "^(Collecting|Installing collected|Successfully installed|ERROR)" \
    | cut -c1-120
  status=${PIPESTATUS[0]}
  set -e
  if [[ ${status} -ne 0 ]]; then
    echo "checkov install failed (pip exit ${status}); removing ${VENV}" >&2
    rm -rf "${VENV}"
    exit "${status}"
  fi
  touch "${STAMP}"
  echo "==> installed checkov $("${VENV}/bin/checkov" --version)"
fi

# checkov leaves unrendered any value whose text is longer than CHECKOV_RENDER_MAX_LEN
# (10,000 characters by default), and everything computed from it. The generated topology is one
# value (var.topology: about 9,000 characters without graph node types, 12,600 with the example
# ones), so past the cap every for_each over it stays unexpanded and the Cloud Run services,
# subscriptions and queues are not scanned at all. 0 renders values of any length.
export CHECKOV_RENDER_MAX_LEN="${CHECKOV_RENDER_MAX_LEN:-0}"

# Every module is local: nothing is downloaded, and no results are uploaded anywhere.
checkov() {
  "${VENV}/bin/checkov" \
    --directory terraform \
    --framework terraform \
    --download-external-modules false \
    --skip-download \
    --compact \
    --quiet \
    "$@"
}

cd "${ROOT}"
if [[ $# -gt 0 ]]; then
  echo "==> checkov ${CHECKOV_VERSION} over terraform/"
  checkov "$@"
  exit
fi

SCRATCH="$(mktemp -d)"
trap 'rm -rf "${SCRATCH}"' EXIT

# scan NAME DIR: checkov over DIR/terraform, the findings on the console, the summary in
# SCRATCH/NAME.json; prints "passed failed skipped resources" into SCRATCH/NAME.counts.
scan() {
  local status=0
  (cd "$2" && checkov --output cli --output json --output-file-path "console,${SCRATCH}/$1.json") \
    || status=$?
  "${VENV}/bin/python" -c 'import json, sys
s = json.load(open(sys.argv[1]))["summary"]
print(s["passed"], s["failed"], s["skipped"], s["resource_count"])' "${SCRATCH}/$1.json" \
    >"${SCRATCH}/$1.counts" || {
    echo "checkov wrote no summary for $1 (exit ${status})" >&2
    echo "0 0 0 0" >"${SCRATCH}/$1.counts"
    return 1
  }
  read -r passed failed skipped resources <"${SCRATCH}/$1.counts"
  echo "==> $1: ${passed} passed, ${failed} failed, ${skipped} skipped, ${resources} resources"
  return "${status}"
}

status=0
echo "==> checkov ${CHECKOV_VERSION} over terraform/ (default: no graph node types)"
scan default "${ROOT}" || status=$?

echo "==> checkov ${CHECKOV_VERSION} over a copy of terraform/ with graph node types" \
  "(push ${GRAPH_PUSH_NODE_TYPES}, pull ${GRAPH_PULL_NODE_TYPES})"
mkdir "${SCRATCH}/graph"
tar --exclude=.terraform -cf - terraform | tar -xf - -C "${SCRATCH}/graph"
"${PROJECT_PYTHON}" scripts/gen_terraform_topology.py --terraform-dir "${SCRATCH}/graph/terraform" \
  --graph-push-node-types "${GRAPH_PUSH_NODE_TYPES}" \
  --graph-pull-node-types "${GRAPH_PULL_NODE_TYPES}" >/dev/null
scan graph "${SCRATCH}/graph" || status=$?

read -r _ _ _ default_resources <"${SCRATCH}/default.counts"
read -r _ _ _ graph_resources <"${SCRATCH}/graph.counts"
if [[ "${graph_resources}" -le "${default_resources}" ]]; then
  echo "checkov scanned ${graph_resources} resources with graph node types, not more than the" \
    "default's ${default_resources}: it did not render the module's for_each maps" >&2
  status=1
fi
exit "${status}"
