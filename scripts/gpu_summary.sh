#!/usr/bin/env bash
# Summarise a test-backend-ops log, counting the cases whose line matches PATTERN (default: the OScaR cases):
#   bash scripts/gpu_summary.sh LOG GPU_TXT TITLE [PATTERN] >> docs/gpu-check-<gpu>.md
set -euo pipefail
log=$1; gpu=$2; title=$3; pat=${4:-oscar}
strip() { sed 's/\x1b\[[0-9;]*m//g' "$log"; }
echo "# $title"
echo
echo "Machine: $(tail -1 "$gpu"). Produced by scripts/gpu_run.sh (bundle from scripts/gpu_bundle.py)."
echo
echo '```'
strip | grep -E "tests passed|Backend CUDA0"
for op in SET_ROWS CPY GET_ROWS FLASH_ATTN_EXT; do
    cases() { strip | grep -E "^  $op\(.*$pat" | grep -c "$1"; }
    echo "$op: $(cases ': OK') OK, $(cases FAIL) FAIL, $(cases 'not supported') not supported"
done
echo '```'
