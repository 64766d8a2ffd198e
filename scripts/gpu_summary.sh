#!/usr/bin/env bash
# Summarise a test-backend-ops log of the OScaR cases: bash scripts/gpu_summary.sh LOG GPU_TXT TITLE >> docs/gpu-check-<gpu>.md
set -euo pipefail
log=$1; gpu=$2; title=$3
strip() { sed 's/\x1b\[[0-9;]*m//g' "$log"; }
echo "# $title"
echo
echo "Machine: $(tail -1 "$gpu"). Produced by scripts/gpu_run.sh (bundle from scripts/gpu_bundle.py)."
echo
echo '```'
strip | grep -E "tests passed|Backend CUDA0"
for op in SET_ROWS CPY GET_ROWS FLASH_ATTN_EXT; do
    echo "$op: $(strip | grep -E "^  $op\(.*oscar" | grep -c ': OK') OK, $(strip | grep -E "^  $op\(.*oscar" | grep -c 'FAIL') FAIL, $(strip | grep -E "^  $op\(.*oscar" | grep -c 'not supported') not supported"
done
echo '```'
