#!/usr/bin/env bash
# Install the mlops-actions suite into its own virtual environment, once per job.
#
#   setup.sh plan      print where the suite goes and its cache key; installed=true when
#                      mlops-actions already runs in this job (an earlier step set it up)
#   setup.sh install   create the venv from the hash-locked requirements.lock unless it is
#                      already there (restored by actions/cache), then put `mlops-actions`
#                      on PATH
#
# Environment: MLOPS_ACTIONS_PYTHON (interpreter, default python3), MLOPS_ACTIONS_EXTRAS
# (optional extras, comma or space separated: ray; each set of extras has its own hash-locked
# lock file, requirements-<extras>.lock, the runtime lock plus the extras, and its own venv),
# MLOPS_ACTIONS_HOME (where venvs live, default $RUNNER_TOOL_CACHE/mlops-actions or
# ~/.cache/mlops-actions).
# The suite's own code is not copied into the venv: a .pth file points at this checkout, so
# the cached venv depends only on the lock file, the OS and the Python version.
set -euo pipefail

# The message is escaped like the toolkit escapes command data, so that a line break in an
# input it quotes (the python input) cannot start a workflow command of its own.
die() {
  local message="$*"
  message="${message//'%'/%25}"
  message="${message//$'\r'/%0D}"
  message="${message//$'\n'/%0A}"
  echo "::error title=mlops-actions setup::${message}" >&2
  exit 2
}

mode="${1:-install}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${MLOPS_ACTIONS_PYTHON:-python3}"
[[ -n "${python}" ]] || python=python3

command -v "${python}" >/dev/null 2>&1 \
  || die "Python interpreter '${python}' not found: set the 'python' input, or add actions/setup-python before this step"
pyver="$("${python}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
"${python}" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "Python ${pyver} is too old: mlops-actions needs Python 3.10 or newer (set the 'python' input)"

# The optional extras (pyproject.toml's optional-dependencies the runtime may need), each with
# the Python module that shows it is installed.
declare -A KNOWN_EXTRAS=([ray]=ray.job_submission)
extras=()
IFS=$', \t\n' read -r -d '' -a words <<<"${MLOPS_ACTIONS_EXTRAS:-}" || true
for extra in "${words[@]}"; do
  [[ -n "${KNOWN_EXTRAS[${extra}]+set}" ]] \
    || die "unknown extra '${extra}' in the 'extras' input: the known extras are $(printf '%s\n' "${!KNOWN_EXTRAS[@]}" | sort | paste -sd, - | sed 's/,/, /g')"
  [[ " ${extras[*]} " == *" ${extra} "* ]] || extras+=("${extra}")
done
# One lock file per set of extras, named by the extras in sorted order (only ray for now).
extras_tag="$(printf '%s\n' "${extras[@]}" | sort | paste -sd- -)"

if [[ -n "${extras_tag}" ]]; then
  lock="${root}/requirements-${extras_tag}.lock"
  [[ -f "${lock}" ]] || die "no lock file for the extras '${extras_tag}' (${lock}): name them one at a time in the 'extras' input"
  flavour="-${extras_tag}"
else
  lock="${root}/requirements.lock"
  flavour=""
fi
lock_hash="$(sha256sum "${lock}" | cut -c1-16)"
os="$(uname -s | tr '[:upper:]' '[:lower:]')"
arch="$(uname -m)"
home="${MLOPS_ACTIONS_HOME:-${RUNNER_TOOL_CACHE:-${HOME}/.cache}/mlops-actions}"
venv="${home}/venv-${os}-${arch}-py${pyver}${flavour}-${lock_hash}"
bin="${home}/bin"
marker="${venv}/.mlops-actions-complete"

# Values here never contain newlines, so name=value is a safe output format.
output() {
  if [[ -n "${GITHUB_OUTPUT:-}" ]]; then printf '%s=%s\n' "$1" "$2" >>"${GITHUB_OUTPUT}"; fi
  printf '%s: %s\n' "$1" "$2"
}

# The suite runs from PATH already (an earlier step set it up) and has the extras asked for:
# their modules import with the interpreter of the `mlops-actions` command's shebang.
already_installed() {
  local command interpreter extra
  command="$(command -v mlops-actions 2>/dev/null)" || return 1
  mlops-actions --version >/dev/null 2>&1 || return 1
  ((${#extras[@]})) || return 0
  IFS= read -r interpreter <"${command}" || return 1
  interpreter="${interpreter#\#!}"
  [[ "${interpreter}" == /* && -x "${interpreter}" ]] || return 1
  for extra in "${extras[@]}"; do
    "${interpreter}" -c "import ${KNOWN_EXTRAS[${extra}]}" >/dev/null 2>&1 || return 1
  done
}

find_uv() {
  if command -v uv >/dev/null 2>&1; then command -v uv; return; fi
  local boot="${home}/uv-bootstrap"
  if [[ ! -x "${boot}/bin/uv" ]]; then
    "${python}" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
      --target "${boot}" --require-hashes -r "${root}/requirements-uv.lock" >&2 || return 1
  fi
  echo "${boot}/bin/uv"
}

install_venv() {
  rm -rf "${venv}"
  mkdir -p "${home}"
  local uv
  if uv="$(find_uv)"; then
    "${uv}" venv --quiet --python "${python}" "${venv}"
    "${uv}" pip install --quiet --python "${venv}/bin/python" --require-hashes -r "${lock}"
  else
    echo "uv is not available; installing with pip (slower)" >&2
    "${python}" -m venv "${venv}"
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check \
      --require-hashes -r "${lock}"
  fi
  touch "${marker}"
}

link_suite() {
  local site
  site="$("${venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  printf '%s\n' "${root}/scripts" >"${site}/mlops_actions_source.pth"
  mkdir -p "${bin}"
  # A script with a shebang, not `python -m`: -m would put the caller's working directory
  # first on sys.path, and a user's file named like a dependency would shadow it.
  cat >"${bin}/mlops-actions" <<LAUNCHER
#!${venv}/bin/python
import sys
from mlops_actions.cli import main
sys.exit(main())
LAUNCHER
  chmod +x "${bin}/mlops-actions"
  # Only this directory goes on PATH: the venv's own python must not shadow the user's.
  if [[ -n "${GITHUB_PATH:-}" ]]; then printf '%s\n' "${bin}" >>"${GITHUB_PATH}"; fi
}

case "${mode}" in
  plan)
    if already_installed; then output installed true; else output installed false; fi
    output venv-path "${venv}"
    output cache-key "mlops-actions-${os}-${arch}-py${pyver}${flavour}-${lock_hash}"
    output python-version "${pyver}"
    ;;
  install)
    if already_installed; then
      output cache-hit true
      output version "$(mlops-actions --version | awk '{print $2}')"
      exit 0
    fi
    if [[ -f "${marker}" && -x "${venv}/bin/python" ]]; then
      cache_hit=true
    else
      cache_hit=false
      install_venv
    fi
    link_suite
    output cache-hit "${cache_hit}"
    output version "$("${bin}/mlops-actions" --version | awk '{print $2}')"
    output bin-path "${bin}"
    ;;
  *)
    die "unknown mode '${mode}': use plan or install"
    ;;
esac
