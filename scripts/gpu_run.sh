#!/usr/bin/env bash
# The GPU machine's side of issue 3's checks (device tool; no network there). Prepare here with
#   ./install.sh && .venv/bin/python scripts/gpu_bundle.py
# then make these device calls back to back (the machine is given back ~30 s after a call returns):
#   1. carry [".carry/src", ".carry/a"]  command: bash scripts/gpu_run.sh start [archs]
#      unpacks, installs our package, and starts the pipeline below in the background (setsid);
#   2. carry [".carry/b"]                command: bash scripts/gpu_run.sh feed
#      delivers the model's second half and the evaluation text;
#   3. no carry, repeated until it says "pipeline finished": bash scripts/gpu_run.sh wait
#   then, on the same machine, "bash scripts/gpu_run.sh again STAGES" runs more stages from this working tree.
#      waits (up to 9 minutes a call) and returns results.tar.gz and pipeline.log in $OUT.
# Pipeline: CUDA build (scripts/build_llama.py --source --offline) -> test-backend-ops -b CUDA0 -p oscar ->
# scripts/gpu_e2e.py (greedy CPU vs GPU, eval) -> Llama-3.1-8B-shaped benchmark (oscar-gguf bench --attention).
# PIPELINE_STAGES (default "build check e2e bench") picks stages ("rpc": every layer on a CUDA ggml-rpc-server,
# issue 16; "multigpu": issue 16 on two GPUs, kind nvidia-h200-x2; "doors": llama-perplexity with only the cache
# type, streams vs unified vs no tier, issue 13; ("attn": the attention kernels alone; "tiereval", "tierbench",
# "tiercpu": the f16 tier's eval, GPU and CPU decode speed (issue 4); "calib", "calibbench": the calibrated eval and
# the calibration's speed cost (issue 5); "probe": the
# GPU eval KLD probe, scripts/gpu_kld_probe.py; "upstream": upstream's test-backend-ops cases of the ops we patch); "build profile" (carry .carry/src only, no feed)
# runs Nsight Compute on the decode kernel instead; "build ours peer" (no feed) measures the peer fork beside ours
# (issue 14); "build ours baseline" (bundle made with --baseline COMMIT) measures COMMIT's build beside ours, and
# "setrows" after it profiles both builds' oscar2 cache write.
set -uo pipefail
W=/root/oscar-gpu
export OSCAR_GGUF_CACHE=$W/cache PYTHONUNBUFFERED=1
res=$W/results
log() { echo "[$(date +%T)] $*" | tee -a $W/pipeline.log; }
prose() {  # the evaluation prose the llama-perplexity stages read
    [ -f $W/prose.txt ] || python3 -c "from oscar_gguf.corpus import load_corpus; open('$W/prose.txt', 'w').write(load_corpus('eval').text[:60000])"
}
kld_cols() {  # "PPL | KLD | same top %" of a llama-perplexity --kl-divergence log
    echo "$(grep -oE 'Mean PPL\(Q\) *: *[0-9.]+' $1 | grep -oE '[0-9.]+$') |" \
         "$(grep -oE 'Mean +KLD: +-?[0-9.]+' $1 | grep -oE '[-0-9.]+$') |" \
         "$(grep -oE 'Same top p: +[0-9.]+' $1 | grep -oE '[0-9.]+$') % |"
}

stage_build() {
    OSCAR_CUDA_ARCHS=${ARCHS:-90} python3 scripts/build_llama.py --python python3 --cuda --offline \
        --source $W/llama-cpp-python > $res/build.log 2>&1 || { tail -40 $res/build.log; return 1; }
    python3 scripts/gpu_cli.py info > $res/info.txt 2>&1
}

stage_check() {
    local bin=$OSCAR_GGUF_CACHE/build/wheel-cuda/bin
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $res/gpu.txt
    $bin/test-backend-ops -b CUDA0 -p oscar > $res/test-backend-ops-cuda.log 2>&1
    log "test-backend-ops rc=$?"
    # again with one block per KV head walking the whole cache: the decode kernel's multi-tile softmax
    OSCAR_DECODE_SPLITS=1 $bin/test-backend-ops -b CUDA0 -o FLASH_ATTN_EXT -p oscar > $res/test-backend-ops-cuda-1split.log 2>&1
    log "test-backend-ops (OSCAR_DECODE_SPLITS=1) rc=$?"
    # and with 3 splits: whole-tile splits (the 4096-row cases have more tiles than splits), unequal in length
    OSCAR_DECODE_SPLITS=3 $bin/test-backend-ops -b CUDA0 -o FLASH_ATTN_EXT -p oscar > $res/test-backend-ops-cuda-3split.log 2>&1
    log "test-backend-ops (OSCAR_DECODE_SPLITS=3) rc=$?"
    { bash scripts/gpu_summary.sh $res/test-backend-ops-cuda.log $res/gpu.txt "test-backend-ops -b CUDA0 -p oscar"
      for n in 1 3; do
          echo
          bash scripts/gpu_summary.sh $res/test-backend-ops-cuda-${n}split.log $res/gpu.txt \
              "OSCAR_DECODE_SPLITS=$n test-backend-ops -b CUDA0 -o FLASH_ATTN_EXT -p oscar"
      done
      } > $res/gpu-check.md
}

stage_doors() {  # issue 13 on the GPU: llama-perplexity with only -ctk/-ctv oscar2 (the default tier and calibration),
    # a stream per sequence (n_seq 4) against unified and against no tier (needs the feed call)
    for _ in $(seq 600); do [ -f $W/fed ] && break; sleep 1; done
    local bin=$OSCAR_GGUF_CACHE/build/wheel-cuda/bin
    prose
    CUDA_VISIBLE_DEVICES= python3 scripts/gpu_cli.py calibrate $W/smollm2.gguf $W/smollm2-cal.gguf > $res/doors-calibrate.log 2>&1
    local ppl="$bin/llama-perplexity -m $W/smollm2-cal.gguf -f $W/prose.txt -c 512 --chunks 8 -ngl 99"
    $ppl --kl-divergence-base $W/f16.kld > $res/doors-f16.log 2>&1
    { echo "| llama-perplexity, SmolLM2 calibrated, 8 chunks of 512, GPU | PPL | mean KLD vs f16 |"; echo "|---|---|---|"
      for args in "-ctk q4_0 -ctv q4_0" "-ctk oscar2 -ctv oscar2" "-ctk oscar2 -ctv oscar2 -kvu" \
                  "-ctk oscar2 -ctv oscar2 --oscar-sinks 0 --oscar-window 0" "-ctk oscar3 -ctv oscar3"; do
          $ppl --kl-divergence-base $W/f16.kld --kl-divergence $args > $res/doors.log 2>&1
          echo "| \`$args\` | $(grep -oE 'Mean PPL\(Q\) *: *[0-9.]+' $res/doors.log | grep -oE '[0-9.]+$') | $(grep -oE 'Mean +KLD: +[0-9.]+' $res/doors.log | grep -oE '[0-9.]+$') |"
      done; } > $res/gpu-doors.md
    cat $res/gpu-doors.md | tee -a $W/pipeline.log
}

stage_rpc() {  # issue 16 on one GPU: every layer on a CUDA ggml-rpc-server on this machine (-dev RPC0), against the
    # same cache on the local CUDA0 (needs the feed call)
    for _ in $(seq 600); do [ -f $W/fed ] && break; sleep 1; done
    local bin=$OSCAR_GGUF_CACHE/build/wheel-cuda/bin
    prose
    $bin/ggml-rpc-server -H 127.0.0.1 -p 50052 -d CUDA0 > $res/rpc-server.log 2>&1 &
    local pid=$!
    sleep 3
    local ppl="$bin/llama-perplexity -m $W/smollm2.gguf -f $W/prose.txt -c 512 --chunks 8 -ngl 99 -v"
    { echo "| llama-perplexity, SmolLM2, 8 chunks of 512 | KV buffer | PPL | KLD vs the same cache on local CUDA0 | same top |"
      echo "|---|---|---|---|---|"
      for t in f16 q4_0 oscar2 oscar3; do
          $ppl -ctk $t -ctv $t -dev CUDA0 --kl-divergence-base $W/rpc-$t.kld > $res/rpc-local-$t.log 2>&1
          $ppl -ctk $t -ctv $t --rpc 127.0.0.1:50052 -dev RPC0 --kl-divergence-base $W/rpc-$t.kld --kl-divergence \
              > $res/rpc-$t.log 2>&1
          echo "| \`-ctk $t -ctv $t\` | $(grep -oE '[^ ]+ KV buffer size' $res/rpc-$t.log | head -1 | cut -d' ' -f1) |" \
               "$(kld_cols $res/rpc-$t.log)"
      done
      echo; echo "Effective bits at context 512 with the default tier: f16 16.00, q4_0 4.50, oscar2 6.28, oscar3 7.28."
      } > $res/gpu-rpc.md
    kill $pid
    cat $res/gpu-rpc.md | tee -a $W/pipeline.log
}

stage_multigpu() {  # issue 16 on two GPUs (kind nvidia-h200-x2; needs the feed call): test-backend-ops on each GPU,
    # -sm layer and -sm row against one GPU, decode speed across both, the largest context per type
    for _ in $(seq 600); do [ -f $W/fed ] && break; sleep 1; done
    local bin=$OSCAR_GGUF_CACHE/build/wheel-cuda/bin
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $res/gpu.txt
    for d in CUDA0 CUDA1; do
        $bin/test-backend-ops -b $d -p oscar > $res/test-backend-ops-$d.log 2>&1
        log "test-backend-ops -b $d rc=$?"
    done
    prose
    local ppl="$bin/llama-perplexity -m $W/smollm2.gguf -f $W/prose.txt -c 512 --chunks 8 -ngl 99 -v"
    { echo "| llama-perplexity, SmolLM2, 8 chunks of 512 | split | KV buffers | PPL | KLD vs one GPU | same top |"
      echo "|---|---|---|---|---|---|"
      for t in f16 oscar2 oscar3; do
          $ppl -ctk $t -ctv $t -dev CUDA0 --kl-divergence-base $W/mg-$t.kld > $res/mg-one-$t.log 2>&1
          for sm in layer row; do
              $ppl -ctk $t -ctv $t -dev CUDA0,CUDA1 -sm $sm --kl-divergence-base $W/mg-$t.kld --kl-divergence \
                  > $res/mg-$sm-$t.log 2>&1
              echo "| \`-ctk $t -ctv $t\` | $sm | $(grep -oE '[^ ]+ KV buffer size' $res/mg-$sm-$t.log | cut -d' ' -f1 | sort -u | tr '\n' ' ') |" \
                   "$(kld_cols $res/mg-$sm-$t.log)"
          done
      done
      echo; echo "Effective bits at context 512 with the default tier: f16 16.00, oscar2 6.28, oscar3 7.28."
      } > $res/gpu-multigpu.md
    cat $res/gpu-multigpu.md | tee -a $W/pipeline.log
    [ -f $W/llama8b.gguf ] || python3 scripts/make_bench_model.py $W/llama8b.gguf > $res/make-model.log 2>&1 || return 1
    for t in f16 q4_0 oscar2 oscar3; do
        for devs in CUDA0 CUDA0,CUDA1; do
            $bin/llama-bench -m $W/llama8b.gguf -ngl 99 -fa 1 -dev $devs -sm layer -ctk $t -ctv $t -p 0 -n 32 -r 2 \
                -d 4096,32768,131072 -o json > $res/mg-bench-$t-${devs/,/+}.json 2> $res/mg-bench-$t-${devs/,/+}.log
            log "llama-bench $t on $devs rc=$?"
        done
    done
    for t in f16 q4_0 oscar3 oscar2; do python3 scripts/gpu_fit_ctx.py $W/llama8b.gguf $res/mg-fit-$t.json --types $t \
        > $res/mg-fit-$t.log 2>&1; log "fit $t: $(tail -1 $res/mg-fit-$t.log)"; done
}

bench8b() {  # NAME BIN MODEL ARGS...: llama-bench decode 64 at every depth and prefill 2048 at 32K, batch 1, all layers
    local name=$1 b=$2 m=$3; shift 3
    case " ${SKIP_BENCH:-} " in *" $name "*) log "llama-bench $name skipped (SKIP_BENCH)"; return;; esac
    local common="-ngl 99 -fa 1 -r 1 -o jsonl"  # BENCH_DEPTHS, BENCH_PREFILL=0: a shorter run when device time is short
    $b/llama-bench -m $m $common -d ${BENCH_DEPTHS:-0,4096,32768,131072} -p 0 -n 64 "$@" > $res/peer-bench-$name.jsonl 2> $res/peer-bench-$name.log
    [ "${BENCH_PREFILL:-1}" = 0 ] || $b/llama-bench -m $m $common -d 32768 -p 2048 -n 0 "$@" >> $res/peer-bench-$name.jsonl 2>> $res/peer-bench-$name.log
    log "llama-bench $name rc=$? ($(wc -l < $res/peer-bench-$name.jsonl) rows)"
}

models8b() {  # the Llama-3.1-8B-shaped model and its identity-calibrated copy (the default path's transform, exact)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $res/gpu.txt
    [ -f $W/llama8b.gguf ] || python3 scripts/make_bench_model.py $W/llama8b.gguf > $res/make-model.log 2>&1 || return 1
    [ -f $W/llama8b-cal.gguf ] || python3 scripts/identity_calibration.py $W/llama8b.gguf $W/llama8b-cal.gguf > $res/identity-cal.log 2>&1
}

stage_ours() {  # our caches over the 8B-shaped model (scripts/peer_bench_report.py tables them with the stages below)
    local bin=$OSCAR_GGUF_CACHE/build/wheel-cuda/bin
    models8b || return 1
    bench8b ours-f16 $bin $W/llama8b.gguf -ctk f16 -ctv f16
    bench8b ours-q4_0 $bin $W/llama8b.gguf -ctk q4_0 -ctv q4_0
    bench8b ours-oscar2-bare $bin $W/llama8b.gguf -ctk oscar2 -ctv oscar2 --oscar-sinks 0 --oscar-window 0
    bench8b ours-oscar2 $bin $W/llama8b-cal.gguf -ctk oscar2 -ctv oscar2
    bench8b ours-oscar3-bare $bin $W/llama8b.gguf -ctk oscar3 -ctv oscar3 --oscar-sinks 0 --oscar-window 0
    bench8b ours-oscar3 $bin $W/llama8b-cal.gguf -ctk oscar3 -ctv oscar3
}

stage_baseline() {  # the commit gpu_bundle.py --baseline packed, built beside ours (tools only, plain CMake), on the same
    # model and depths: a change against what it replaced, in one run (q4_0 is the same code in both: the control)
    local bb=$W/baseline-build src=$W/baseline
    models8b || return 1
    [ -f .carry/src/baseline/llama-src.tar.gz ] || { log "no baseline in the bundle (gpu_bundle.py --baseline)"; return 1; }
    mkdir -p $src/native && tar xzf .carry/src/baseline/llama-src.tar.gz -C $src && tar xf .carry/src/baseline/native.tar -C $src
    local flags quants  # as our build's (scripts/build_llama.py)
    flags=$(python3 -c "import sys; sys.path.insert(0, 'scripts'); from build_llama import cpu_flags; print(' '.join(cpu_flags()))")
    quants=$(python3 -c "import sys; sys.path.insert(0, 'scripts'); from build_llama import CUDA_FA_QUANTS; print(CUDA_FA_QUANTS)")
    cmake -S $src/llama-cpp-python/vendor/llama.cpp -B $bb -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
        -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" -DGGML_CUDA_FA_QUANTS="$quants" \
        -DCMAKE_CUDA_ARCHITECTURES=${ARCHS:-90} -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DOSCAR_NATIVE_DIR=$src/native \
        -DLLAMA_BUILD_TESTS=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAVA_BUILD=OFF \
        > $res/baseline-build.log 2>&1 && cmake --build $bb --target llama-bench test-backend-ops >> $res/baseline-build.log 2>&1 \
        || { tail -30 $res/baseline-build.log; return 1; }
    log "baseline $(cat .carry/src/baseline/COMMIT) built"
    bench8b base-f16 $bb/bin $W/llama8b.gguf -ctk f16 -ctv f16
    bench8b base-q4_0 $bb/bin $W/llama8b.gguf -ctk q4_0 -ctv q4_0
    bench8b base-oscar2-bare $bb/bin $W/llama8b.gguf -ctk oscar2 -ctv oscar2 --oscar-sinks 0 --oscar-window 0
    bench8b base-oscar2 $bb/bin $W/llama8b-cal.gguf -ctk oscar2 -ctv oscar2
    bench8b base-oscar3-bare $bb/bin $W/llama8b.gguf -ctk oscar3 -ctv oscar3 --oscar-sinks 0 --oscar-window 0
    bench8b base-oscar3 $bb/bin $W/llama8b-cal.gguf -ctk oscar3 -ctv oscar3
    for b in ours:$OSCAR_GGUF_CACHE/build/wheel-cuda/bin base:$bb/bin; do  # the decode kernel alone at 128K
        ${b#*:}/test-backend-ops perf -b CUDA0 -o FLASH_ATTN_EXT -p "kv=131072.*type_K=(f16|oscar2|oscar3)," 2>&1 \
            | sed 's/\x1b\[[0-9;]*m//g' | grep FLASH_ATTN_EXT | sed "s/^/${b%%:*} /" >> $res/baseline-attn.txt
    done
}

stage_peer() {  # issue 14 item 4: the peer fork built beside ours and llama-bench over the same model, depths and settings
    # (run "ours" too for the table), and where each f16 decode's attention time goes at 128K (Nsight Compute on the
    # first decode step's kernel); no feed call needed
    local bin=$OSCAR_GGUF_CACHE/build/wheel-cuda/bin
    models8b || return 1
    local pbin
    pbin=$(python3 scripts/build_peer.py --cuda --archs ${ARCHS:-90} --tarball .carry/src/peer/*.tar.gz 2> $res/peer-build.log | tail -1)
    log "peer build: ${pbin:-FAILED}"
    if [ -n "$pbin" ]; then
        for t in f16 q4_0 turbo2 turbo3 turbo4; do bench8b peer-$t $pbin $W/llama8b.gguf -ctk $t -ctv $t; done
    fi
    if command -v ncu > /dev/null; then  # the first decode step at 128K (--no-warmup: the prefill runs the MMA kernel)
        for who in ours:$bin peer:$pbin; do
            [ -n "${who#*:}" ] || continue
            echo "=== ${who%%:*} f16" >> $res/peer-ncu.txt
            ncu --kernel-name regex:"flash_attn_ext_vec" -c 2 --section SpeedOfLight --section LaunchStats \
                ${who#*:}/llama-bench -m $W/llama8b.gguf -ngl 99 -fa 1 -r 1 --no-warmup -d 131072 -p 0 -n 1 \
                -ctk f16 -ctv f16 2>&1 | grep -vE "^==PROF==|^\s*$" | tail -70 >> $res/peer-ncu.txt
        done
        log "ncu done"
    fi
}

stage_setrows() {  # the oscar2 and oscar3 cache writes of decode steps under Nsight Compute, ours and (after
    # "baseline") the baseline build: duration per launch, then ours' oscar2 issue statistics (docs/gpu-tcq-setrows-h100.txt)
    local bin=$OSCAR_GGUF_CACHE/build/wheel-cuda/bin
    models8b || return 1
    local bench="-m $W/llama8b.gguf -ngl 99 -fa 1 -r 1 --no-warmup -d 0 -p 0 -n 1 --oscar-sinks 0 --oscar-window 0"
    for t in oscar2 oscar3; do
        for who in ours:$bin base:$W/baseline-build/bin; do
            [ -x ${who#*:}/llama-bench ] || continue
            echo "=== ${who%%:*} $t"
            ncu --kernel-name regex:set_rows -c 6 --section SpeedOfLight --section LaunchStats ${who#*:}/llama-bench $bench -ctk $t -ctv $t 2>&1 \
                | grep -E "k_set_rows|Duration|Grid Size|Block Size|Registers" | sed 's/(const float \*.*) (/(/'
        done
    done > $res/gpu-tcq-setrows.txt
    { echo; echo "# ours, one launch: WarpStateStats, SchedulerStats, ComputeWorkloadAnalysis, InstructionStats"
      ncu --kernel-name regex:set_rows -c 1 --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
          --section InstructionStats $bin/llama-bench $bench -ctk oscar2 -ctv oscar2 2>&1 \
          | grep -E "Ipc|Issue Slots|Eligible|Active Warps|Warp Cycles|Executed Instructions|Issued Instructions|Avg. Active"
    } >> $res/gpu-tcq-setrows.txt
    log "setrows profile done"
}

stage_upstream() {  # upstream's own cases for the ops our patches touch, upstream types: nothing of theirs may regress
    local bin=$OSCAR_GGUF_CACHE/build/wheel-cuda/bin
    for op in SET_ROWS CPY GET_ROWS FLASH_ATTN_EXT; do
        timeout 600 $bin/test-backend-ops -b CUDA0 -o $op -p "type_K=(f16|q8_0|q4_0)|type_src=|type=" 2>&1 | grep -v oscar
    done > $res/test-backend-ops-cuda-upstream.log
    log "test-backend-ops upstream cases done"
    bash scripts/gpu_summary.sh $res/test-backend-ops-cuda-upstream.log $res/gpu.txt \
        "test-backend-ops -b CUDA0 -o SET_ROWS|CPY|GET_ROWS|FLASH_ATTN_EXT, upstream types" . > $res/gpu-check-upstream.md
}

stage_probe() {  # where the GPU eval's extra KLD comes from (needs the feed call's model)
    for _ in $(seq 600); do [ -f $W/fed ] && break; sleep 1; done
    python3 scripts/gpu_kld_probe.py $W/smollm2.gguf $res/probe 2 > $res/probe.log 2>&1 || return 1
    { echo "# Where the GPU eval's extra KLD comes from"; echo
      echo "Machine: $(tail -1 $res/gpu.txt). Default model; \`python3 scripts/gpu_kld_probe.py MODEL OUT 2\` (scripts/gpu_run.sh stage probe)."
      echo; cat $res/probe/kld-probe.md; } > $res/gpu-kld-probe.md
}

stage_e2e() {
    for _ in $(seq 600); do [ -f $W/fed ] && break; sleep 1; done
    [ -f $W/fed ] || { log "no model second half (feed call missing)"; return 1; }
    python3 scripts/gpu_e2e.py $W/smollm2.gguf $res/e2e > $res/e2e.log 2>&1
}

stage_bench() {
    [ -f $W/llama8b.gguf ] || python3 scripts/make_bench_model.py $W/llama8b.gguf > $res/make-model.log 2>&1 || return 1
    python3 scripts/gpu_cli.py bench --model $W/llama8b.gguf --gpu-layers -1 \
        --kv f16,q8_0,q4_0,oscar4,oscar3,oscar2 --depths 0,4096,16384,32768,65536,131072 --prefill 32768:2048 \
        --n-batch 2048 --random-tokens --sequential --attention --no-plot --out $res/bench-cuda-llama8b > $res/bench.log 2>&1
}

stage_tiereval() {  # issue 4 on the GPU: the default model's eval with and without the f16 tier (needs the feed call)
    for _ in $(seq 600); do [ -f $W/fed ] && break; sleep 1; done
    python3 scripts/gpu_cli.py eval --model $W/smollm2.gguf --gpu-layers -1 --kv f16,q8_0,q4_0,oscar4,oscar3,oscar2 \
        --tiers 0:0,1:32,1:128 --ctx 2048 --max-chunks 2 --no-plot --out $res/eval-tier-cuda-smollm2-ctx2048 > $res/eval-tier.log 2>&1
    python3 scripts/gpu_tier_decode.py $W/smollm2.gguf $res/tier-decode-cuda.json > $res/tier-decode.log 2>&1
}

stage_tierbench() {  # issue 4 on the GPU: decode speed with and without the f16 tier at depths 4K and 32K (no carry)
    [ -f $W/llama8b.gguf ] || python3 scripts/make_bench_model.py $W/llama8b.gguf > $res/make-model.log 2>&1 || return 1
    python3 scripts/gpu_cli.py bench --model $W/llama8b.gguf --gpu-layers -1 --kv q4_0,oscar3,oscar2 --tiers 0:0,1:128 \
        --depths 4096,32768 --prefill 32768:2048 --n-batch 2048 --random-tokens --sequential --no-plot \
        --out $res/bench-tier-cuda-llama8b > $res/bench-tier.log 2>&1
}

stage_tiercpu() {  # issue 4: CPU decode speed with and without the f16 tier at depths 4K and 32K (this machine's cores)
    for _ in $(seq 600); do [ -f $W/fed ] && break; sleep 1; done
    python3 scripts/gpu_cli.py bench --model $W/smollm2.gguf --gpu-layers 0 --kv oscar2,oscar3 --tiers 0:0,1:128 \
        --depths 4096,32768 --n-batch 2048 --no-plot --out $res/bench-tier-cpu-smollm2 > $res/bench-tier-cpu.log 2>&1
}

stage_calib() {  # issue 5 on the GPU: the default model calibrated (this machine's CPU: the tap reads host memory),
    # then its eval with and without the calibration (needs the feed call)
    for _ in $(seq 600); do [ -f $W/fed ] && break; sleep 1; done
    CUDA_VISIBLE_DEVICES= python3 scripts/gpu_cli.py calibrate $W/smollm2.gguf $W/smollm2-cal.gguf > $res/calibrate.log 2>&1 || return 1
    python3 scripts/gpu_cli.py eval --model $W/smollm2-cal.gguf --gpu-layers -1 --kv f16,q4_0,oscar4,oscar3,oscar2 \
        --tiers 0:0,1:128 --calib both --ctx 2048 --max-chunks 2 --no-plot --out $res/eval-calib-cuda-smollm2-ctx2048 > $res/eval-calib.log 2>&1
}

stage_calibbench() {  # issue 5: what the calibration's transform costs in decode and prefill (identity statistics)
    [ -f $W/llama8b.gguf ] || python3 scripts/make_bench_model.py $W/llama8b.gguf > $res/make-model.log 2>&1 || return 1
    python3 scripts/identity_calibration.py $W/llama8b.gguf $W/llama8b-cal.gguf > $res/identity-cal.log 2>&1 || return 1
    rm -f $W/llama8b.gguf
    python3 scripts/gpu_cli.py bench --model $W/llama8b-cal.gguf --gpu-layers -1 --kv oscar3,oscar2 --calib both \
        --depths 0,4096,32768 --prefill 32768:2048 --n-batch 2048 --random-tokens --sequential --no-plot \
        --out $res/bench-calib-cuda-llama8b > $res/bench-calib.log 2>&1
}

stage_attn() {  # the flash-attention kernels alone at 128K and the copy bandwidth (test-backend-ops perf)
    local bin=$OSCAR_GGUF_CACHE/build/wheel-cuda/bin
    $bin/test-backend-ops perf -b CUDA0 -o FLASH_ATTN_EXT -p "kv=131072" > $res/attn-perf.log 2>&1
    $bin/test-backend-ops perf -b CUDA0 -o CPY -p "ne_src=\[8192,8192,8,1\]" >> $res/attn-perf.log 2>&1
    grep -E "FLASH_ATTN_EXT|CPY" $res/attn-perf.log | sed 's/\x1b\[[0-9;]*m//g' | tee -a $W/pipeline.log
}

stage_profile() {  # Nsight Compute on the decode kernel at 128K, per type (PROFILE_TYPES)
    local bin=$OSCAR_GGUF_CACHE/build/wheel-cuda/bin
    for t in ${PROFILE_TYPES:-q4_0 oscar2 oscar3}; do
        echo "=== $t" >> $res/profile.txt
        ncu --kernel-name regex:"flash_attn_ext_vec|flash_attn_oscar_decode" -c 1 --section SpeedOfLight --section LaunchStats --section Occupancy \
            --section WarpStateStats --section SchedulerStats \
            $bin/test-backend-ops perf -b CUDA0 -o FLASH_ATTN_EXT -p "kv=131072.*type_K=$t," 2>&1 \
            | grep -vE "^==PROF==|^\s*$" | tail -80 >> $res/profile.txt
    done
    bash scripts/gpu_profile_summary.sh $res/profile.txt > $res/gpu-profile.md
}

stage_tcq() {  # oscar2's and oscar3's trellis codes on CUDA against the CPU, exactly (scripts/gpu_tcq_check.cpp): SET_ROWS and CPY
    # bytes, GET_ROWS / CPY / convert.cu decodes; after "build", no feed call needed
    local bin=$OSCAR_GGUF_CACHE/build/wheel-cuda/bin
    local inc=$W/llama-cpp-python/vendor/llama.cpp/ggml/include
    local nvcc
    nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
    $nvcc -std=c++17 -O2 scripts/gpu_tcq_check.cpp -I $inc -I native -L $bin -lggml -lggml-base -lggml-cuda \
        -Xlinker -rpath=$bin -ldl -o $W/gpu_tcq_check > $res/tcq-check-build.log 2>&1 \
        || { log "tcq check: build failed"; tail -20 $res/tcq-check-build.log; return 1; }
    $W/gpu_tcq_check $bin/libggml-cuda.so > $res/tcq-check.log 2>&1
    log "tcq check rc=$? ($(tail -1 $res/tcq-check.log))"
}

pipeline() {
    for s in ${PIPELINE_STAGES:-build check e2e bench}; do
        log "stage $s"
        stage_$s || log "stage $s FAILED"
    done
    log "pipeline finished"
}

case "${1:-}" in
start)
    rm -rf $W; mkdir -p $W/cache $res
    [ -f .carry/a/model.part0 ] && cp .carry/a/model.part0 $W/  # not needed by "build profile"
    tar xzf .carry/src/llama-src.tar.gz -C $W
    python3 -m pip install -q --no-index --no-deps .carry/src/wheels/*.whl 2>&1 | tail -3
    python3 -m pip install -q --no-index --no-deps --no-build-isolation . 2>&1 | tail -3
    cp -r . $W/repo  # the pipeline runs from its own copy: later calls replace the working tree
    (cd $W/repo && ARCHS=${2:-90} setsid nohup bash scripts/gpu_run.sh pipeline > $W/nohup.log 2>&1 < /dev/null &)
    log "started pipeline in the background"
    ;;
feed)
    cat $W/model.part0 .carry/b/model.part1 > $W/smollm2.gguf.tmp
    mv $W/smollm2.gguf.tmp $W/smollm2.gguf
    log "model sha256 $(sha256sum $W/smollm2.gguf | cut -c1-16)"
    mkdir -p $OSCAR_GGUF_CACHE/corpus && cp .carry/b/*.deb $OSCAR_GGUF_CACHE/corpus/
    python3 -c "from oscar_gguf.corpus import fetch_html; print(fetch_html())"  # unpacks the carried debs
    touch $W/fed
    ;;
pipeline)
    pipeline
    ;;
again)  # more stages on the machine that ran "start" (no carry): bash scripts/gpu_run.sh again "attn bench"
    rm -rf $W/repo && cp -r . $W/repo && sed -i '/pipeline finished/d' $W/pipeline.log
    (cd $W/repo && PIPELINE_STAGES="$2" setsid nohup bash scripts/gpu_run.sh pipeline > $W/nohup.log 2>&1 < /dev/null &)
    log "started stages $2 in the background"
    ;;
wait)
    for _ in $(seq 540); do grep -q "pipeline finished" $W/pipeline.log 2>/dev/null && break; sleep 1; done
    tar czf $OUT/results.tar.gz -C $W results
    cp $W/pipeline.log $OUT/
    for f in $res/*.log; do echo "== $f"; tail -c 400 $f | tr '\r' '\n' | tail -3; done
    cat $W/pipeline.log
    ;;
*)
    echo "usage: $0 start [archs] | feed | wait | again STAGES" >&2; exit 2
    ;;
esac
