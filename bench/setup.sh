#!/usr/bin/env bash
# The benchmark's system packages, installed when missing (as root): DCMTK, whose dcm2json is
# timed on the element-heavy sets, and Orthanc, the archive the benchmark runs beside dicomlake.
# Debian's orthanc package starts its own service on install; a policy-rc.d that refuses every
# start keeps it from running (the benchmark starts its own Orthanc on 127.0.0.1).
set -euo pipefail

missing=()
command -v dcm2json >/dev/null || missing+=(dcmtk)
command -v Orthanc >/dev/null || missing+=(orthanc)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "bench/setup.sh: ${missing[*]} missing; run it as root to install them" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
placed=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    placed=1
fi
trap '[ "$placed" = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
# In case a service manager started it anyway
if command -v service >/dev/null && service orthanc status >/dev/null 2>&1; then
    service orthanc stop
fi
