#!/usr/bin/env bash
# One device call that checks a change and times it (after or including
# scripts/gpu/build.sh), in steps, each skipped once the call's time
# (LIMIT_S, default 570 s from the start) is short:
#   tests    the attention, model, prefix, decode-step, warm-up and kernel tests on
#            CUDA in fp32, and the kernel, decode-step and prefix tests again in bf16
#   services ttft.sh without bench-services: the data-plane and services tests on
#            CUDA, then 256 x (128 + 128) at 64 in flight: decode alone, the
#            services over CUDA IPC, and again under MPS
#   ttft     ttft.sh (its tests with TTFT_TESTS=1): bench-services at batch 1 over CUDA IPC
#            (TTFT at 16/128/512/900 prompt tokens beside the offline engine), then
#            the 64-in-flight loads (decode alone, services over gRPC and HTTP),
#            and the same under MPS; LOAD_RUNS (default 1) repeats the loads
#   curve    curve.sh: the services swept over request rates, bytes and CUDA IPC
#   prefix   Part C's sweep, 32 x (900 shared + 50), 64 new, naive and fused (and with
#            PREFIX_EAGER=1 fused again with prefill's eager passes)
#   profile  the step's profile at batch 1 and 64 (decode attention before/after)
#   decode   bench-decode, the cuBLAS and the split-K graph steps (and the latter
#            with the LayerNorms folded in), batch 1/8/64
#   peers    the peers of shared/anchors carried in .peers/ (gptfast_compile.py,
#            hf_batch.py, ipc_probe.py), in this call beside the rows above
#   chunk    decode alone at 64 in flight, prefill token budgets 0 and 256
#   shapes   shapes.sh: decode alone at 64 in flight with prefill's eager passes and
#            with its CUDA graphs (VARIANTS picks decode steps and CUDA_MODULE_LOADING)
#   kernels  the kernel workbench (QUICK; FILTER=name picks kernels, and then runs
#            every case of them, not QUICK's)
#   fp32     bench-services in fp32 at 128 and 900 tokens: whether the services' greedy
#            tokens equal the offline engine's where rounding cannot tell them apart
#   registers the register-form prefill attention (NANOSERVE_PREFILL_ATTENTION=registers,
#            engine/cuda/prefill_attention_mma.cu) against the default (wmma): its
#            kernel test in bf16, the decode-step and prefix tests in bf16 with it,
#            then with each in turn bench-services at batch 1 (128/512/900 tokens and
#            the cached prefix + 50 new) and Part C's fused sweep
#   cascade  shared-prefix (cascade) attention in the decode step (--decode_step
#            cuda-graph-cascade): its kernel test and decode-step test in bf16 (and the
#            step test in fp32, where it runs the plain step), then Part C's sweep,
#            fused, with the cuda-graph step and with it
#   suite    the whole suite in fp32 for what time is left
# STEPS (default all, in that order) picks some. A step that fails does not
# stop the others. Logs under $OUT, packed at the end into $OUT/logs.tgz (a
# device call brings back 8 files at most).
source "$(dirname "$0")/env.sh"
T0=$(date +%s)
pack_logs() {
  (cd "$OUT" && tar czf /tmp/quick-logs.tgz --exclude=logs.tgz . && find . -mindepth 1 -delete &&
    mv /tmp/quick-logs.tgz logs.tgz) || true
}
trap pack_logs EXIT
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( ${LIMIT_S:-570} - $(elapsed) )); }
BIN="$BUILD/bin"
echo "gpu: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)"
step_tests() {
  NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=fp32 "$BIN/engine_test" \
    --gtest_filter='Attention*:Model*:Prefix*:Generate*:DecodeStep*:BatchScheduler*:WarmUp*' >"$OUT/quick-engine.log" 2>&1 &&
    NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=fp32 "$BIN/cuda_kernels_test" >>"$OUT/quick-engine.log" 2>&1 \
    && NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=bf16 "$BIN/cuda_kernels_test" >>"$OUT/quick-engine.log" 2>&1 \
    && NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=bf16 "$BIN/engine_test" \
      --gtest_filter='DecodeStep*:Prefix*' >>"$OUT/quick-engine.log" 2>&1 \
    && "$BIN/kv_cache_test" --gtest_filter='PageLayout*:BlockTables*' >>"$OUT/quick-engine.log" 2>&1 \
    && echo "engine + kernel tests fp32, kernel + decode-step + prefix tests bf16, page copies: ok" \
    || { echo "engine + kernel tests fp32: FAILED"; grep -E "FAILED|Failure|Expected|Which is" "$OUT/quick-engine.log" | head -20; }
}
step_services() {
  TESTS=1 BENCH=0 BENCH_MPS=0 timeout "$(( $(left) - 10 ))" "$ROOT/scripts/gpu/ttft.sh" 2>&1 | tail -40
}
step_ttft() {
  TESTS=${TTFT_TESTS:-0} BENCH_MPS=0 timeout "$(( $(left) - 10 ))" "$ROOT/scripts/gpu/ttft.sh" 2>&1 | tail -60
}
step_curve() { LIMIT_S=90 timeout 200 "$ROOT/scripts/gpu/curve.sh"; }
step_prefix() {
  timeout 120 "$BIN/nanoserve" bench --model random:gpt2 --device cuda --dtype bf16 --attention naive,fused \
    --sweeps prefix --shared_lens 900 --batch_sizes 32 --suffix_len 50 --prefix_output 64 \
    --repeats 3 --warmup 1 --progress=false --out "$OUT/prefix.csv" 2>"$OUT/prefix.log" | tee "$OUT/prefix.md"
  # PREFIX_EAGER=1: fused again with prefill's eager passes, to set beside its graphs.
  [ "${PREFIX_EAGER:-0}" = 1 ] || return 0
  echo "fused, prefill's eager passes (--decode_step cuda-graph-eager-prefill):"
  timeout 120 "$BIN/nanoserve" bench --model random:gpt2 --device cuda --dtype bf16 --attention fused \
    --sweeps prefix --shared_lens 900 --batch_sizes 32 --suffix_len 50 --prefix_output 64 \
    --repeats 3 --warmup 1 --progress=false --decode_step cuda-graph-eager-prefill \
    --out "$OUT/prefix-eager.csv" 2>>"$OUT/prefix.log" | tee "$OUT/prefix-eager.md"
}
step_profile() {
  timeout 90 "$BIN/nanoserve" bench-decode --model random:gpt2 --device cuda --dtype bf16 --attention naive \
    --decode_step cuda-graph --decode_batches 1,64 --repeats 2 --profile 2>&1 \
    | tee "$OUT/profile.log" | tail -40
}
step_decode() {
  timeout 120 "$BIN/nanoserve" bench-decode --model random:gpt2 --device cuda --dtype bf16 --attention naive \
    --decode_step cuda-graph,cuda-graph-matvec,cuda-graph-matvec-ln --decode_batches 1,8,64 --repeats 3 \
    --out "$OUT/bench-decode.csv" 2>&1 | tee "$OUT/bench-decode.log" | tail -10
}
step_peers() {
  [ -d "$ROOT/.peers" ] || { echo "no .peers/ carried"; return; }
  for peer in "$ROOT"/.peers/*.py; do
    local name; name=$(basename "$peer" .py)
    echo "peer $name:"
    timeout "$(( $(left) - 20 < 200 ? $(left) - 20 : 200 ))" python3 "$peer" >"$OUT/peer-$name.log" 2>&1 \
      || echo "  (exit $?)"
    tail -8 "$OUT/peer-$name.log"
  done
}
step_chunk() {
  CHUNKS=${CHUNKS:-"0 256"} timeout 150 "$ROOT/scripts/gpu/chunk.sh" \
    | grep -E "^###|requests ok|output token throughput|\| TTFT|\| TPOT"
}
step_shapes() { timeout 150 "$ROOT/scripts/gpu/shapes.sh"; }
step_kernels() {
  QUICK=$([ -n "${FILTER:-}" ] && echo 0 || echo 1) timeout 150 "$ROOT/scripts/gpu/kernels.sh" 2>&1 |
    tail -40
}
step_fp32() {
  timeout 150 "$BIN/nanoserve" bench-services --model random:gpt2 --device cuda --dtype fp32 \
    --kv_transport auto --prompt_lengths 128,900 --max_new_tokens 32 --repeats 3 \
    --work_dir "$OUT/svc-fp32" --pool_mb 4096 >"$OUT/services-fp32.md" 2>"$OUT/services-fp32.err" \
    || { echo "bench-services fp32 failed"; tail -5 "$OUT/services-fp32.err"; }
  grep -E "^\| (prompt|prefix|128|900) " "$OUT/services-fp32.md"
}
step_registers() {
  local log="$OUT/registers-tests.log"
  if NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=bf16 "$BIN/cuda_kernels_test" \
      --gtest_filter='*PrefillAttention*' >"$log" 2>&1 &&
    NANOSERVE_PREFILL_ATTENTION=registers NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=bf16 \
      "$BIN/engine_test" --gtest_filter='DecodeStep*:Prefix*' >>"$log" 2>&1; then
    echo "registers: kernel test and decode-step + prefix tests in bf16: ok"
  else
    echo "registers: tests FAILED"; grep -E "FAILED|Failure|Expected|Which is" "$log" | head -20
    return 1
  fi
  local v
  for v in wmma registers; do
    NANOSERVE_PREFILL_ATTENTION=$v timeout 150 "$BIN/nanoserve" bench-services --model random:gpt2 \
      --device cuda --dtype bf16 --kv_transport auto --prompt_lengths 128,512,900 \
      --max_new_tokens 16 --repeats 5 --work_dir "$OUT/svc-$v" --pool_mb 4096 \
      >"$OUT/services-$v.md" 2>"$OUT/services-$v.err" || { echo "bench-services $v failed"; continue; }
    echo "bench-services, prefill attention $v:"
    grep -E "^\| (prompt|prefix|128|512|896|900) " "$OUT/services-$v.md"
  done
  for v in wmma registers; do
    echo "Part C, fused, prefill attention $v:"
    NANOSERVE_PREFILL_ATTENTION=$v timeout 120 "$BIN/nanoserve" bench --model random:gpt2 --device cuda \
      --dtype bf16 --attention fused --sweeps prefix --shared_lens 900 --batch_sizes 32 \
      --suffix_len 50 --prefix_output 64 --repeats 3 --warmup 1 --progress=false \
      --out "$OUT/prefix-$v.csv" 2>"$OUT/prefix-$v.log" | tee "$OUT/prefix-$v.md" | tail -6
  done
}
step_cascade() {
  local log="$OUT/cascade-tests.log"
  if NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=bf16 "$BIN/cuda_kernels_test" \
      --gtest_filter='*SharedPrefix*' >"$log" 2>&1 &&
    NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=bf16 "$BIN/engine_test" \
      --gtest_filter='DecodeStepTest.Cascade*' >>"$log" 2>&1 &&
    NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=fp32 "$BIN/engine_test" \
      --gtest_filter='DecodeStepTest.Cascade*' >>"$log" 2>&1; then
    echo "cascade: kernel test bf16, decode-step test bf16 and fp32: ok"
  else
    echo "cascade: tests FAILED"; grep -E "FAILED|Failure|Expected|Which is" "$log" | head -20
    return 1
  fi
  local kind
  for kind in cuda-graph cuda-graph-cascade; do
    echo "Part C, fused, decode step $kind:"
    timeout 120 "$BIN/nanoserve" bench --model random:gpt2 --device cuda --dtype bf16 \
      --attention fused --decode_step "$kind" --sweeps prefix --shared_lens 900 --batch_sizes 32 \
      --suffix_len 50 --prefix_output 64 --repeats 3 --warmup 1 --progress=false \
      --out "$OUT/prefix-$kind.csv" 2>"$OUT/prefix-$kind.log" | tee "$OUT/prefix-$kind.md" | tail -3
  done
}
step_suite() {
  NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=fp32 timeout "$(left)" \
    ctest --test-dir "$BUILD" -j4 --output-on-failure >"$OUT/test-fp32.log" 2>&1
  echo "ctest rc=$?"; grep -E "tests passed|\(Failed\)|\(Timeout\)" "$OUT/test-fp32.log" | head -30
}
for step in ${STEPS:-tests services prefix profile decode peers chunk shapes kernels suite}; do
  if [ "$(left)" -lt 40 ]; then echo "[$(elapsed)s] $step: skipped, no time left"; continue; fi
  echo "[$(elapsed)s] == $step"
  "step_$step" || echo "[$(elapsed)s] $step: failed (rc $?)"
done
echo "[$(elapsed)s] done"
