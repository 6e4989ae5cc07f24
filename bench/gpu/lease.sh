#!/usr/bin/env bash
# One GPU lease's work in one script (the device tool runs it in the repo root; $OUT comes back).
# Expects .gpuc/ (ignored by git, carried): dotnet.tar.xz (the .NET runtime with ASP.NET Core),
# apps.tar.xz (framework-dependent publishes under app/<Project>/), fixtures.tar.xz (../shared/fixtures, unpacked to
# /tmp/fixtures: TEMPER_FIXTURES).
# Made here by bench/gpu/pack.sh. Usage: bash bench/gpu/lease.sh STEP [STEP ...]; each step has its own time
# limit, a whole-run guard skips the remaining steps past $LEASE_S seconds (default 540), and every log goes
# into $OUT/logs.tgz, with the tail of each printed.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/logs
export TEMPER_FIXTURES=/tmp/fixtures DOTNET_ROOT=/tmp/dotnet DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 PYTHONUNBUFFERED=1
[ -x /tmp/dotnet/dotnet ] || { mkdir -p /tmp/dotnet && tar -xJf .gpuc/dotnet.tar.xz -C /tmp/dotnet; }
[ -d /tmp/app ] || tar -xJf .gpuc/apps.tar.xz -C /tmp
[ -d /tmp/fixtures ] || tar -xJf .gpuc/fixtures.tar.xz -C /tmp
D=/tmp/dotnet/dotnet
mkdir -p /tmp/bin; export PATH=/tmp/bin:$PATH   # wrappers as files, so timeout can run them
printf '#!/bin/sh\nexec %s /tmp/app/Temper.Cli/temper.dll "$@"\n' $D > /tmp/bin/temper
printf '#!/bin/sh\np=$1; shift; exec %s /tmp/app/$p/$p.dll -noColor "$@"\n' $D > /tmp/bin/tests
chmod +x /tmp/bin/temper /tmp/bin/tests
begin=$(date +%s); LEASE_S=${LEASE_S:-540}

run() { # run NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local used=$(( $(date +%s) - begin ))
  if [ $(( used + 20 )) -gt "$LEASE_S" ]; then echo "== $name: skipped (lease guard, ${used}s used)"; return; fi
  [ $(( used + limit )) -gt "$LEASE_S" ] && limit=$(( LEASE_S - used ))
  local t0=$(date +%s)
  timeout "$limit" "$@" > "/tmp/logs/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc in $(( $(date +%s) - t0 ))s (limit ${limit}s)"
  grep -E "registers|spill|arning|serialized|Total:|tokens/s|GB/s|bandwidth|peak|ratio|error|Error|FAIL|\[FAIL\]|Skipped|mismatch|max|plan|tok/s|decode|ms" "/tmp/logs/$name.log" | grep -v "^\s*at " | tail -n 25
}

for step in "$@"; do
  case "$step" in
    info) run info 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,clocks.max.mem --format=csv; nvcc --version | tail -2; python3 -c "import torch,transformers,peft;print(torch.__version__,transformers.__version__,peft.__version__)"' ;;
    # The second pass keeps the sm_80 GEMM checked on an H100, where CudaLinear's forward takes the sm_90a one by default.
    cuda-tests) run cuda-tests 150 bash -c 'tests Temper.Cuda.Tests; r=$?; TEMPER_GEMM_SM90=0 tests Temper.Cuda.Tests -class "*CudaLinearChecks" -class "*CudaDecodeGraphChecks" && exit $r' ;;
    sanitizer) run sanitizer 100 compute-sanitizer --tool memcheck --target-processes all $D /tmp/app/Temper.Cuda.Tests/Temper.Cuda.Tests.dll -noColor ;;
    racecheck) run racecheck 200 compute-sanitizer --tool racecheck --target-processes all $D /tmp/app/Temper.Cuda.Tests/Temper.Cuda.Tests.dll -noColor -trait "Kernels=cuda" ;;
    # TEMPER_POISON_MEMORY=1: IlgpuBackend.Uninitialized fills with NaN, so a kernel that leaves part of an
    # output unwritten (DecoderBackprop takes its outputs uninitialised) fails the checks instead of passing on stale values.
    ilgpu-cuda) run ilgpu-cuda 300 env TEMPER_POISON_MEMORY=1 tests Temper.Kernels.Ilgpu.Tests -class "*.Cuda*" -class "*TensorCore*" ;;
    peft) for m in llama-tiny qwen2-tiny; do run peft-$m 90 bash tests/peft/run.sh peft $TEMPER_FIXTURES/hf/$m .gpuc/peft-$m; done
          if [ -d .gpuc/peft-dora-llama-tiny ]; then run peft-dora-llama-tiny 90 bash tests/peft/run.sh peft $TEMPER_FIXTURES/hf/llama-tiny .gpuc/peft-dora-llama-tiny; fi
          if [ -d .gpuc/peft-prompt-llama-tiny ]; then run peft-prompt-llama-tiny 90 bash tests/peft/run.sh peft $TEMPER_FIXTURES/hf/llama-tiny .gpuc/peft-prompt-llama-tiny; fi
          if [ -d .gpuc/peft-prefix-llama-tiny ]; then run peft-prefix-llama-tiny 90 bash tests/peft/run.sh peft $TEMPER_FIXTURES/hf/llama-tiny .gpuc/peft-prefix-llama-tiny; fi ;;
    nf4) run nf4 90 temper bench nf4 --device cuda --rows 14336 --cols 4096 --reps 50
         run nf4-ptx 90 temper bench nf4 --device cuda --kernels ptx --rows 14336 --cols 4096 --reps 50 ;;
    attention) run attention 120 bash -c 'temper bench attention --device cuda --batch 8 --heads 9 --kv-heads 3 --seq 1024 --head-dim 64 --reps 20 && temper bench attention --device cuda --batch 1 --heads 32 --kv-heads 8 --seq 2048 --head-dim 128 --reps 10' ;;
    ilgpu-attention) run ilgpu-attention 200 tests Temper.Kernels.Ilgpu.Tests -class "*CudaOpChecks*" -method "*ttention*" ;;
    decode) run decode 120 temper bench decode --device cuda --dtype bf16 --prompt-len 128 --tokens 64
            run decode-1b 150 temper bench decode --device cuda --dtype bf16 --shape llama-3.2-1b --prompt-len 128 --tokens 64
            run decode-1b-profile 150 temper bench decode --device cuda --dtype bf16 --shape llama-3.2-1b --prompt-len 128 --tokens 16 --profile ;;
    decode-graph) run decode-graph-smol 120 temper bench decode --graph --prompt-len 128 --tokens 256
                  run decode-graph-1b 180 temper bench decode --graph --shape llama-3.2-1b --prompt-len 128 --tokens 256 --profile
                  run decode-graph-rows 240 bash -c 'for r in 2 4 8; do temper bench decode --graph --shape llama-3.2-1b --rows $r --prompt-len 128 --tokens 128 | grep -E "^decode|^weights"; done'
                  run decode-graph-checks 60 bash -c 'tests Temper.Cuda.Tests -class "*CudaDecodeGraphChecks" && tests Temper.Native.Tests -class "*CudaGenerateTests"' ;;
    peer-smol) run peer-smol 120 python3 bench/peer/peft_train_step.py --shape smollm-135m --batch-size 8 --seq-len 1024 --steps 3 ;;
    temper-smol) run temper-smol 200 temper bench train --device cuda --dtype bf16 --shape smollm-135m --batch-size 8 --seq-len 1024 --steps 2 ;;
    peer-1b) run peer-1b 150 python3 bench/peer/peft_train_step.py --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 3 ;;
    temper-1b) run temper-1b 300 temper bench train --device cuda --dtype bf16 --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 2 ;;
    qlora-8b-ptx) run temper-qlora-8b-ptx 240 temper bench train --device cuda --kernels ptx --qlora --dtype bf16 --shape llama-3.1-8b --lora-r 16 --batch-size 1 --seq-len 2048 --steps 2 --gradient-checkpointing ;;
    qlora-8b) run temper-qlora-8b 200 temper bench train --device cuda --qlora --dtype bf16 --shape llama-3.1-8b --lora-r 16 --batch-size 1 --seq-len 2048 --steps 2 --gradient-checkpointing ;;
    lora-8b) run temper-lora-8b 200 temper bench train --device cuda --dtype bf16 --shape llama-3.1-8b --lora-r 16 --batch-size 1 --seq-len 2048 --steps 2 --gradient-checkpointing ;;
    serve-sweep) run serve-sweep 300 temper bench serve-sweep --device cuda --concurrency 1,4,16,64 --adapters 1,10,100 --prompt-len 64 --tokens 32 --out /tmp/logs/serve-sweep ;;
    serve) run serve-8 60 temper bench serve --device cuda --requests 16 --adapters 8
           run serve-100 90 temper bench serve --device cuda --requests 100 --adapters 100 ;;
    ptx) run ptx-checks 120 bash -c 'tests Temper.Cuda.Tests && TEMPER_POISON_MEMORY=1 tests Temper.Kernels.Ilgpu.Tests -class "*PtxRouting*" -class "*PtxFusedOpRouting*"'
         run ptx-bench 200 bash -c 'temper bench ops --device cuda --dtype bf16 --kernels ptx --reps 3 && temper bench train --device cuda --dtype bf16 --shape smollm-135m --batch-size 8 --seq-len 1024 --steps 2 --kernels ptx' ;;
    ops-1b) w="--batch 8 --seq 1024 --hidden 2048 --ffn 8192 --heads 32 --kv-heads 8 --head-dim 64 --vocab 128256"
            run peer-ops-1b 150 python3 bench/peer/torch_ops.py $w --reps 10
            run temper-ops-1b-ptx 200 temper bench ops --device cuda --dtype bf16 --kernels ptx $w --reps 5 ;;
    gemm-sm90) w="--batch 8 --seq 1024 --hidden 2048 --ffn 8192 --heads 32 --kv-heads 8 --head-dim 64 --vocab 128256"
               # ptxas (nvcc 13) on the embedded PTX first: this VM's nvcc 11.8 cannot assemble sm_90a (wgmma, TMA,
               # mbarrier expect_tx, setmaxnreg), so a syntax slip or a spill shows here before any check runs.
               run gemm-sm90-ptxas 90 bash -c 'cd kernels/Temper.Kernels.Cuda && ptxas -arch=sm_90a -v Ptx/gemm_bf16_sm90.ptx -o /tmp/gemm_sm90.cubin && nvcc -arch=sm_90a -cubin -O3 -std=c++17 -Xptxas -v -o /tmp/gemm_sm90_nvcc.cubin cuda/gemm_bf16_sm90.cu'
               run gemm-sm90-checks 150 bash -c 'tests Temper.Cuda.Tests -class "*CudaGemmSm90Checks"; for v in 1 wide tma tma-wide; do echo "== TEMPER_GEMM_SM90=$v"; TEMPER_GEMM_SM90=$v tests Temper.Cuda.Tests -class "*CudaLinearChecks"; done'
               run gemm-sm90-bench 280 bash -c "for v in none tma tma-wide; do echo \"== TEMPER_GEMM_SM90=\$v\"; TEMPER_GEMM_SM90=\$v temper bench ops --device cuda --dtype bf16 --kernels ptx $w --reps 5; done" ;;
    gemm-sm90-peer) w="--batch 8 --seq 1024 --hidden 2048 --ffn 8192 --heads 32 --kv-heads 8 --head-dim 64 --vocab 128256"
               run gemm-sm90-bench-cp-async 200 bash -c "for v in 1 wide; do echo \"== TEMPER_GEMM_SM90=\$v\"; TEMPER_GEMM_SM90=\$v temper bench ops --device cuda --dtype bf16 --kernels ptx $w --reps 5; done"
               run peer-ops-1b 150 python3 bench/peer/torch_ops.py $w --reps 10
               # K = 8192 -> N = 2048 (the MLP down projection's widths): Linear [8192,8192]->2048, beside PyTorch's
               s="--batch 8 --seq 1024 --hidden 8192 --ffn 2048 --heads 64 --kv-heads 8 --head-dim 128 --vocab 32000"
               run gemm-sm90-bench-down 150 bash -c "for v in none tma-wide; do echo \"== TEMPER_GEMM_SM90=\$v\"; TEMPER_GEMM_SM90=\$v temper bench ops --device cuda --dtype bf16 --kernels ptx $s --reps 5; done"
               run peer-ops-down 90 python3 bench/peer/torch_ops.py $s --reps 10 ;;
    temper-1b-ptx) run temper-1b-ptx 300 temper bench train --device cuda --dtype bf16 --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 2 --kernels ptx ;;
    decode-graph-8b) run decode-graph-8b 240 temper bench decode --graph --shape llama-3.1-8b --prompt-len 128 --tokens 128 --profile ;;
    ptx-1b-gc) run temper-1b-ptx-gc 300 temper bench train --device cuda --dtype bf16 --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 2 --kernels ptx --gradient-checkpointing
               run peer-1b-gc 150 python3 bench/peer/peft_train_step.py --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 3 --gradient-checkpointing ;;
    ptx-attention) # the GPU's ptxas on the register-resident forwards first (registers, spills: attention_bf16_mma.cu's table)
         run ptx-attention-ptxas 60 bash -c 'for a in sm_90 sm_80; do ptxas -arch=$a -v kernels/Temper.Kernels.Cuda/Ptx/attention_bf16_mma.ptx -o /tmp/attention_mma_$a.cubin; done'
         run ptx-attention-checks 150 bash -c 'tests Temper.Cuda.Tests -class "*CudaAttentionChecks" -class "*CudaAttentionBackwardChecks" && for m in 0 1 2; do TEMPER_ATTENTION_MMA=$m tests Temper.Kernels.Ilgpu.Tests -class "*CudaPtxRoutingChecks" -method "*Attention*" || exit 1; done'
         # TEMPER_ATTENTION_MMA: 0 the WMMA forward (attention_bf16.cu), 1 and 2 attention_bf16_mma.cu (16 or 32 query
         # rows a warp); the backward is the same in all three. PyTorch's SDPA on the same shape last.
         run ptx-attention-bench 300 bash -c 'temper bench attention --device cuda --kernels ilgpu --batch 4 --heads 16 --kv-heads 16 --seq 2048 --head-dim 64 --reps 20; for m in 0 1 2; do echo "== ptx, TEMPER_ATTENTION_MMA=$m (ms, GFLOP/s)"; TEMPER_ATTENTION_MMA=$m temper bench attention --device cuda --kernels ptx --batch 4 --heads 16 --kv-heads 16 --seq 2048 --head-dim 64 --reps 20; done; TEMPER_ATTENTION_MMA=1 temper bench attention --device cuda --kernels ptx --batch 1 --heads 32 --kv-heads 8 --seq 2048 --head-dim 128 --reps 10; python3 bench/peer/torch_ops.py --batch 4 --seq 2048 --heads 16 --kv-heads 16 --head-dim 64 --reps 20 | grep -i attention' ;;
    ptx-paged) run ptx-paged-checks 90 bash -c 'tests Temper.Cuda.Tests -class "*CudaPagedAttentionChecks" && tests Temper.Kernels.Ilgpu.Tests -class "*CudaPagedAttentionPtxRoutingChecks"'
         for k in ilgpu ptx; do run ptx-paged-serve-$k 120 temper bench serve --device cuda --kernels $k --requests 32 --prompt-len 512 --tokens 64 --adapters 0; done
         run ptx-paged-serve-bf16kv 60 temper bench serve --device cuda --kernels ptx --requests 32 --prompt-len 512 --tokens 64 --adapters 0 --kv-cache-dtype bfloat16 ;;
    ops) run peer-ops 120 python3 bench/peer/torch_ops.py --reps 10
         run temper-ops 120 temper bench ops --device cuda --dtype bf16 --reps 10 ;;
    gemm) run gemm 240 temper bench gemm --reps 20
          run peer-gemm 120 python3 bench/peer/torch_gemm.py --reps 20 ;;
    gemv) run gemv-checks 60 tests Temper.Cuda.Tests -class "*CudaGemvChecks" -class "*CudaGemvGraphChecks"
          run gemv 120 bash -c 'temper bench gemv --reps 50 && temper bench gemv --rows 8 --reps 20'
          run peer-gemv 120 python3 bench/peer/torch_gemv.py --reps 50 ;;
    # The owed transformers/PEFT fixtures (CPU, float32; torch, transformers and peft are on the GPU machine): Qwen3's
    # (tests/reference/make_fixtures.py) and PEFT's DoRA on llama-tiny (make_dora_reference.py; make_dora_training_reference.py: step-0 DoRA SFT loss and gradients; make_ia3_reference.py: PEFT IA3's step-0 loss, ia3_l gradients and logits) and PEFT's add_weighted_adapter
    # combinations on llama-tiny (make_combine_reference.py) and LoRA with modules_to_save embed_tokens, lm_head (make_modules_to_save_reference.py)
    # and TRL's CPO step 0 per loss type (make_cpo_reference.py), transformers' tiny MoE models (make_moe_fixtures.py) and PEFT LoRA
    # over their attention, experts and routers with the router aux loss (make_moe_lora_reference.py, reading those MoE folders; it
    # needs transformers 4.46..4.57, so its failure alone leaves its two folders owed and the rest still packed). They come back in
    # $OUT/reference-fixtures.tgz, to unpack into tests/fixtures/hf/ and commit; the skipped tests then run on them.
    reference-fixtures) run reference-fixtures 420 bash -c 'python3 tests/reference/make_fixtures.py /tmp/fixtures qwen3-tiny qwen3 3 theta=1000000 head_dim=32 && python3 tests/reference/make_fixtures.py /tmp/fixtures qwen3-yarn-tiny qwen3 5 theta=1000000 head_dim=32 rope_scaling=yarn && python3 tests/reference/make_dora_reference.py $TEMPER_FIXTURES/hf /tmp/fixtures && python3 tests/reference/make_dora_training_reference.py $TEMPER_FIXTURES/hf /tmp/fixtures && python3 tests/reference/make_prompt_tuning_reference.py $TEMPER_FIXTURES/hf /tmp/fixtures && python3 tests/reference/make_prefix_tuning_reference.py $TEMPER_FIXTURES/hf /tmp/fixtures && python3 tests/reference/make_combine_reference.py $TEMPER_FIXTURES/hf /tmp/fixtures && python3 tests/reference/make_modules_to_save_reference.py $TEMPER_FIXTURES/hf /tmp/fixtures && python3 tests/reference/make_cpo_reference.py $TEMPER_FIXTURES/hf /tmp/fixtures && python3 tests/reference/make_ia3_reference.py $TEMPER_FIXTURES/hf /tmp/fixtures && python3 tests/reference/make_moe_fixtures.py $TEMPER_FIXTURES/hf /tmp/fixtures && { python3 tests/reference/make_moe_lora_reference.py /tmp/fixtures /tmp/fixtures || echo "make_moe_lora_reference.py failed: mixtral-tiny-lora, qwen2-moe-tiny-lora stay owed"; } && tar -czf "$OUT/reference-fixtures.tgz" -C /tmp/fixtures qwen3-tiny qwen3-yarn-tiny llama-tiny-dora llama-tiny-dora-training llama-tiny-prompt-tuning llama-tiny-prefix-tuning llama-tiny-combine llama-tiny-modules-to-save llama-tiny-cpo llama-tiny-ia3 mixtral-tiny qwen3-moe-tiny qwen2-moe-tiny $(cd /tmp/fixtures && ls -d mixtral-tiny-lora qwen2-moe-tiny-lora 2>/dev/null)' ;;
    # bitsandbytes' own 4-bit checkpoint of llama-tiny (needs bitsandbytes, which the GPU image may lack: then it says so).
    bnb-reference) run bnb-reference 120 bash -c 'python3 -c "import bitsandbytes" && python3 tests/reference/make_bnb_reference.py $TEMPER_FIXTURES/hf /tmp/fixtures && tar -czf "$OUT/bnb-reference.tgz" -C /tmp/fixtures llama-tiny-bnb4' ;;
    # What the defaults run (no --kernels, no TEMPER_GEMM_SM90 or TEMPER_ATTENTION_MMA: on an H100 the PTX kernels, the
    # sm_90a tma-wide GEMM, the 32-row mma.sync attention forward), checked and timed beside PyTorch in one call.
    defaults) run defaults-checks 90 bash -c 'TEMPER_POISON_MEMORY=1 tests Temper.Kernels.Ilgpu.Tests -class "*PtxRouting*" -class "*PtxFusedOpRouting*" -class "*CudaBf16LoraBound" && tests Temper.Native.Tests -class "*CudaGenerateTests"'
              w="--batch 8 --seq 1024 --hidden 2048 --ffn 8192 --heads 32 --kv-heads 8 --head-dim 64 --vocab 128256"
              run defaults-bench 200 bash -c "temper bench train --device cuda --dtype bf16 --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 2 && temper bench train --device cuda --dtype bf16 --shape smollm-135m --batch-size 8 --seq-len 1024 --steps 2 && temper bench ops --device cuda --dtype bf16 $w --reps 5 && temper bench attention --device cuda --batch 4 --heads 16 --kv-heads 16 --seq 2048 --head-dim 64 --reps 20 && temper bench serve --device cuda --requests 16 --adapters 8"
              run defaults-peer 150 bash -c "python3 bench/peer/peft_train_step.py --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 3 && python3 bench/peer/peft_train_step.py --shape smollm-135m --batch-size 8 --seq-len 1024 --steps 3 && python3 bench/peer/torch_ops.py --batch 4 --seq 2048 --heads 16 --kv-heads 16 --head-dim 64 --reps 20 | grep -i attention" ;;
    # CudaLoraRank (cuda/lora_rank.cu: xa, dxa, dA, dB of the LoRA linears), opt-in by TEMPER_LORA_RANK=1 until this has run:
    # its checks, the routing checks with it on, then the 1B LoRA step without and with it (and profiled with it).
    lora-rank) run lora-rank-checks 90 bash -c 'tests Temper.Cuda.Tests -class "*CudaLoraRankChecks" && TEMPER_POISON_MEMORY=1 tests Temper.Kernels.Ilgpu.Tests -class "*CudaPtxRoutingChecks" -class "*CudaBf16LoraBound" && TEMPER_LORA_RANK=1 tests Temper.Kernels.Ilgpu.Tests -class "*CudaBf16LoraBound"'
               run lora-rank-bench 150 bash -c 'for v in 0 1; do echo "== TEMPER_LORA_RANK=$v"; TEMPER_LORA_RANK=$v temper bench train --device cuda --dtype bf16 --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 2; done; TEMPER_LORA_RANK=1 temper bench train --device cuda --dtype bf16 --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 1 --profile | head -24' ;;
    # Opt-ins owed a GPU run: the input gradient as W^T (transpose_16.cu) then the sm_90a GEMM (TEMPER_GEMM_SM90_NN=1) and the
    # LoRA term in the sm_90a epilogue (TEMPER_GEMM_SM90_LORA=1). ptxas (nvcc 13) on the changed sm_90a PTX first (registers,
    # spills: the epilogue must not push the 128-accumulator consumers into local memory), the checks with them on, `bench ops`
    # at the 1B widths (Linear and LoraLinear lines), then the 1B LoRA step with none, each, and all three opt-ins (TEMPER_LORA_RANK too).
    sm90-opt-ins) w="--batch 8 --seq 1024 --hidden 2048 --ffn 8192 --heads 32 --kv-heads 8 --head-dim 64 --vocab 128256"
             run sm90-opt-ins-ptxas 60 bash -c 'ptxas -arch=sm_90a -v kernels/Temper.Kernels.Cuda/Ptx/gemm_bf16_sm90.ptx -o /tmp/gemm_sm90.cubin'
             run sm90-opt-ins-checks 150 bash -c 'tests Temper.Cuda.Tests -class "*CudaTransposeChecks" -class "*CudaGemmSm90Checks" && TEMPER_GEMM_SM90_NN=1 TEMPER_GEMM_SM90_LORA=1 tests Temper.Cuda.Tests -class "*CudaLinearChecks" && TEMPER_GEMM_SM90_NN=1 TEMPER_GEMM_SM90_LORA=1 TEMPER_POISON_MEMORY=1 tests Temper.Kernels.Ilgpu.Tests -class "*CudaPtxRoutingChecks" -class "*CudaBf16LoraBound" -class "*CudaEndToEnd*"'
             run sm90-opt-ins-bench 300 bash -c "for v in none TEMPER_GEMM_SM90_NN TEMPER_GEMM_SM90_LORA; do echo \"== \$v=1\"; env \$v=1 temper bench ops --device cuda --dtype bf16 $w --reps 5 | grep -i linear; env \$v=1 temper bench train --device cuda --dtype bf16 --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 2 | grep -E 'tokens/s|peak'; done; echo '== all three opt-ins'; TEMPER_GEMM_SM90_NN=1 TEMPER_GEMM_SM90_LORA=1 TEMPER_LORA_RANK=1 temper bench train --device cuda --dtype bf16 --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 2" ;;
    # The attention backward's dq and dk/dv on mma.sync (cuda/attention_bf16_backward_mma.cu, D = 64), opt-in by
    # TEMPER_ATTENTION_BACKWARD_MMA=1, and the 256-query forward (attention_bf16_mma_forward_d64_x2_q256), opt-in by
    # TEMPER_ATTENTION_MMA=3, until this has run: ptxas (nvcc 13), the checks (every kernel, the _bf16in forwards among them),
    # the routing checks with both on, then `bench attention` with the defaults and with both opt-ins (the forward and backward
    # lines time different kernels, so one run covers both), each also from bf16 q, k, v (`--inputs bf16`: the _bf16in
    # kernels, reading what SDPA reads and what a bf16 model's training keeps), beside SDPA (issue 7's B4 H16 T2048 D64 causal).
    attention-backward-mma) run attention-backward-mma-ptxas 60 bash -c 'for a in sm_90 sm_80; do for f in attention_bf16_backward_mma attention_bf16_mma; do ptxas -arch=$a -v kernels/Temper.Kernels.Cuda/Ptx/$f.ptx -o /tmp/${f}_$a.cubin 2>&1 | grep -E "entry|registers|spill"; done; done'
         run attention-backward-mma-checks 120 bash -c 'tests Temper.Cuda.Tests -class "*CudaAttentionChecks" -class "*CudaAttentionBackwardChecks" && TEMPER_ATTENTION_MMA=3 TEMPER_ATTENTION_BACKWARD_MMA=1 TEMPER_POISON_MEMORY=1 tests Temper.Kernels.Ilgpu.Tests -class "*CudaPtxRoutingChecks" -method "*Attention*"'
         run attention-backward-mma-bench 150 bash -c 'for m in "0 2" "1 3"; do set -- $m; echo "== TEMPER_ATTENTION_BACKWARD_MMA=$1 TEMPER_ATTENTION_MMA=$2"; TEMPER_ATTENTION_BACKWARD_MMA=$1 TEMPER_ATTENTION_MMA=$2 temper bench attention --device cuda --batch 4 --heads 16 --kv-heads 16 --seq 2048 --head-dim 64 --reps 20; TEMPER_ATTENTION_BACKWARD_MMA=$1 TEMPER_ATTENTION_MMA=$2 temper bench attention --device cuda --batch 4 --heads 16 --kv-heads 16 --seq 2048 --head-dim 64 --reps 20 --inputs bf16; done; TEMPER_ATTENTION_BACKWARD_MMA=1 TEMPER_ATTENTION_MMA=3 temper bench attention --device cuda --batch 8 --heads 32 --kv-heads 8 --seq 1024 --head-dim 64 --reps 10; python3 bench/peer/torch_ops.py --batch 4 --seq 2048 --heads 16 --kv-heads 16 --head-dim 64 --reps 20 | grep -i attention' ;;
    # QLoRA's training products through NF4 -> bf16 scratch (nf4.cu's nf4_to_bf16) then the pipelined GEMMs, opt-in by
    # TEMPER_NF4_DEQUANT=1 until this has run: the checks, then the 8B QLoRA step (the CUDA C++ kernels) without and with it.
    nf4-dequant) run nf4-dequant-checks 90 bash -c 'tests Temper.Cuda.Tests -class "*CudaLinearChecks" -class "*CudaNf4Checks" && TEMPER_NF4_DEQUANT=1 TEMPER_POISON_MEMORY=1 tests Temper.Kernels.Ilgpu.Tests -class "*CudaPtxRoutingChecks" -method "*Nf4*"'
         run nf4-dequant-bench 300 bash -c 'for v in 0 1; do echo "== TEMPER_NF4_DEQUANT=$v"; TEMPER_NF4_DEQUANT=$v temper bench train --device cuda --qlora --dtype bf16 --shape llama-3.1-8b --lora-r 16 --batch-size 1 --seq-len 2048 --steps 2 --gradient-checkpointing | grep -E "train:|memory:"; done' ;;
    # Batch-1 GEMVs on a capped grid (gemv_bf16.cu's persistent variants), opt-in by TEMPER_GEMV_PERSISTENT=1 until this has run:
    # the checks, then `bench gemv` and the 1B graph decode (issue 10's roofline) without and with it.
    gemv-persistent) run gemv-persistent-checks 90 bash -c 'tests Temper.Cuda.Tests -class "*CudaGemvChecks" -class "*CudaGemvGraphChecks" && TEMPER_GEMV_PERSISTENT=1 tests Temper.Cuda.Tests -class "*CudaDecodeGraphChecks"'
         run gemv-persistent-bench 240 bash -c 'for v in 0 1; do echo "== TEMPER_GEMV_PERSISTENT=$v"; TEMPER_GEMV_PERSISTENT=$v temper bench gemv --reps 50; TEMPER_GEMV_PERSISTENT=$v temper bench decode --graph --shape llama-3.2-1b --prompt-len 128 --tokens 256 | grep -E "^decode|^weights|^roofline|^peer"; done' ;;
    # Programmatic dependent launch in the decode graph (TEMPER_DECODE_PDL=1: the step's kernels' compute_90 builds, each
    # launched to overlap the one before), opt-in until this has run: ptxas (nvcc 13) on the sm90 builds, the decode graph
    # checks (their DependentLaunch cases run on compute capability 9.0), then the 1B graph decode without and with it.
    decode-pdl) run decode-pdl-ptxas 60 bash -c 'for f in gemv_bf16 paged_attention decode_step; do ptxas -arch=sm_90 -v kernels/Temper.Kernels.Cuda/Ptx/$f.sm90.ptx -o /tmp/$f.sm90.cubin > /tmp/$f.ptxas 2>&1 && echo "$f.sm90.ptx: ptxas ok, $(grep -c spill /tmp/$f.ptxas) kernels, $(grep -E "[1-9][0-9]* bytes spill" -c /tmp/$f.ptxas) with spills" || { echo "$f.sm90.ptx: ptxas error"; head -5 /tmp/$f.ptxas; }; done'
         run decode-pdl-checks 90 bash -c 'tests Temper.Cuda.Tests -class "*CudaDecodeGraphChecks" && TEMPER_DECODE_PDL=1 tests Temper.Native.Tests -class "*CudaGenerateTests"'
         run decode-pdl-bench 240 bash -c 'for v in 0 1 0 1; do echo "== TEMPER_DECODE_PDL=$v"; TEMPER_DECODE_PDL=$v temper bench decode --graph --shape llama-3.2-1b --prompt-len 128 --tokens 256 | grep -E "^backend|^decode|^weights|^roofline|^peer"; done; TEMPER_DECODE_PDL=1 temper bench decode --graph --shape llama-3.1-8b --prompt-len 128 --tokens 128 | grep -E "^decode|^roofline"' ;;
    # Every opt-in on at once (TEMPER_LORA_RANK, TEMPER_GEMM_SM90_NN, TEMPER_GEMM_SM90_LORA, TEMPER_ATTENTION_BACKWARD_MMA, TEMPER_ATTENTION_MMA=3, TEMPER_NF4_DEQUANT) for issue 7's
    # LoRA SFT bar: the 1B step (and its profile) beside PEFT in the same call; run after the steps above have checked each.
    all-opt-ins) o="TEMPER_LORA_RANK=1 TEMPER_GEMM_SM90_NN=1 TEMPER_GEMM_SM90_LORA=1 TEMPER_ATTENTION_BACKWARD_MMA=1 TEMPER_ATTENTION_MMA=3 TEMPER_NF4_DEQUANT=1"
         run all-opt-ins-train 240 bash -c "env $o temper bench train --device cuda --dtype bf16 --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 3 && env $o temper bench train --device cuda --dtype bf16 --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 1 --profile | head -40"
         run all-opt-ins-peer 150 python3 bench/peer/peft_train_step.py --shape llama-3.2-1b --batch-size 8 --seq-len 1024 --steps 3 ;;
    cmd:*) run "cmd" 300 bash -c "${step#cmd:}" ;;
    *) echo "unknown step $step" ;;
  esac
done
tar -czf "$OUT/logs.tgz" -C /tmp logs
echo "lease script: $(( $(date +%s) - begin ))s"
