#!/usr/bin/env bash
# All end-to-end benchmarks, in order; results in bench/results/ and a report on stdout.
set -euo pipefail
here=$(dirname "$0")
bash "$here/throughput.sh"
bash "$here/history.sh"
bash "$here/idle.sh"
