#!/usr/bin/env bash
# Installs the Debian packages scpo-ctrl needs. Idempotent: safe to run again.
#   gcc, make, libc6-dev, binutils : JIT-compiled rollouts (CasADi -> C), host C builds, nm/size,
#     acados solver builds (its generated Makefile)
#   gcc-arm-none-eabi, libnewlib-arm-none-eabi : Cortex-M4F cross builds of the exported C
#   qemu-system-arm : runs those builds on the mps2-an386 board (PIL, export vectors)
#   valgrind : callgrind instruction counts of the host C (benchmarks)
#   chromium : renders the evidence report headless in its test (images loaded, screenshot)
set -euo pipefail
PACKAGES=(gcc make libc6-dev binutils gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm valgrind chromium)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "debian packages ok: ${PACKAGES[*]}"
