#!/usr/bin/env bash
# Installs the Debian packages scpo-ctrl needs. Idempotent: safe to run again.
#   gcc, libc6-dev : JIT-compiled closed-loop rollouts (CasADi -> C), host C builds
set -euo pipefail
PACKAGES=(gcc libc6-dev)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "debian packages ok: ${PACKAGES[*]}"
