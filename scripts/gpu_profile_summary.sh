#!/usr/bin/env bash
# Key lines of the ncu log written by gpu_run.sh's profile stage: bash scripts/gpu_profile_summary.sh PROFILE > docs/gpu-profile-<gpu>.md
set -euo pipefail
echo "# ncu of the flash-attention decode kernel at 128K context"
echo
echo "Key lines of the ncu log (scripts/gpu_profile_summary.sh). The ncu command is the profile stage of scripts/gpu_run.sh"
echo "(\`PIPELINE_STAGES=\"build profile\" bash scripts/gpu_run.sh start\`): the test-backend-ops perf case with D 128,"
echo "8 KV heads, GQA 4, 131072 cached tokens and one query, under Nsight Compute's own clock control."
echo
echo '```'
grep -E "^=== |Duration|DRAM Throughput|Compute \(SM\) Throughput|Issued Warp Per Scheduler|No Eligible|Registers Per Thread|Grid Size|Achieved Occupancy|Warp Cycles Per Issued|Active Warps Per Scheduler|Eligible Warps" "$1" | sed 's/  */ /g'
echo '```'
