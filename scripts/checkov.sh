#!/usr/bin/env bash
# Static security checks over terraform/ with checkov, run from its own virtualenv
# (.venv-checkov): checkov pins many libraries that must not mix with the project's .venv.
#
# Every finding is either fixed or skipped inline, next to its resource, with
# `#checkov:skip=CKV_...:reason`. The script exits non-zero on any failed check.
# Extra arguments go to checkov, e.g. `bash scripts/checkov.sh --output json`.
set -euo pipefail

CHECKOV_VERSION="3.3.30"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROOT}/.venv-checkov"
PYTHON="${PYTHON:-python3}"
STAMP="${VENV}/.installed-checkov-${CHECKOV_VERSION}"

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

echo "==> checkov ${CHECKOV_VERSION} over terraform/"
cd "${ROOT}"
# Every module is local: nothing is downloaded, and no results are uploaded anywhere.
exec "${VENV}/bin/checkov" \
  --directory terraform \
  --framework terraform \
  --download-external-modules false \
  --skip-download \
  --compact \
  --quiet \
  "$@"
