#!/usr/bin/env bash
# Installs the benchmark peers from the public registries: python-hl7 (PyPI `hl7`) and
# Medplum's Hl7Server (npm `@medplum/hl7`, into bench/peers/node_modules).
set -euo pipefail
cd "$(dirname "$0")"
if ! python3 -c "import hl7.mllp" >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check "hl7==0.4.5"
fi
if [ ! -d node_modules/@medplum/hl7 ]; then
  npm install --silent --no-audit --no-fund
fi
