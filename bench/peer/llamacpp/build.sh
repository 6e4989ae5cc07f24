#!/usr/bin/env bash
# Builds the llama.cpp peer (peer.cpp) against a llama.cpp source tree, CPU only, -O3 -march=native with OpenMP, as
# llama.cpp's default CPU build: a static libllama.a of ggml, ggml-cpu and llama's src, then ./peer beside it.
#   bash bench/peer/llamacpp/build.sh LLAMA_DIR GGML_DIR OUT_DIR
# LLAMA_DIR holds llama.cpp's include/ and src/ (a llama.cpp checkout, or Ollama's vendored llama/llama.cpp);
# GGML_DIR holds ggml's include/ and src/ (LLAMA_DIR/../ggml in a checkout, Ollama's ml/backend/ggml/ggml).
# Needs g++ and make; about 4 minutes on 2 cores. Nothing of llama.cpp is kept in this repository.
set -euo pipefail
L=$(readlink -f "$1"); G=$(readlink -f "$2"); OUT=$(mkdir -p "$3" && readlink -f "$3")
HERE=$(dirname "$(readlink -f "$0")")
cat > "$OUT/Makefile" <<MAKE
L=$L
G=$G
FLAGS=-O3 -march=native -fPIC -fopenmp -DGGML_USE_CPU -DGGML_USE_OPENMP -D_GNU_SOURCE -DNDEBUG -DGGML_SCHED_MAX_COPIES=4 -DGGML_VERSION=\"0\" -DGGML_COMMIT=\"peer\" -I\$(G)/include -I\$(G)/src -I\$(G)/src/ggml-cpu -I\$(L)/include -I\$(L)/src
CSRC=\$(G)/src/ggml-alloc.c \$(G)/src/ggml-quants.c \$(G)/src/ggml.c \$(G)/src/ggml-cpu/ggml-cpu.c \$(G)/src/ggml-cpu/quants.c \$(G)/src/ggml-cpu/arch/x86/quants.c
CXXSRC=\$(G)/src/ggml-backend-reg.cpp \$(G)/src/ggml-backend.cpp \$(G)/src/ggml-opt.cpp \$(G)/src/ggml-threading.cpp \$(G)/src/ggml.cpp \$(G)/src/gguf.cpp \$(wildcard \$(G)/src/ggml-cpu/*.cpp) \$(G)/src/ggml-cpu/arch/x86/repack.cpp \$(G)/src/ggml-cpu/llamafile/sgemm.cpp \$(wildcard \$(G)/src/ggml-cpu/amx/*.cpp) \$(wildcard \$(L)/src/*.cpp) \$(wildcard \$(L)/src/models/*.cpp)
OBJ=\$(patsubst /%,obj/%.o,\$(CSRC) \$(CXXSRC))
peer: $HERE/peer.cpp libllama.a
	g++ -O2 -std=c++17 -fopenmp -I\$(L)/include -I\$(G)/include \$< libllama.a -o \$@ -lpthread -ldl
libllama.a: \$(OBJ)
	ar rcs \$@ \$^
obj/%.c.o: /%.c
	@mkdir -p \$(dir \$@)
	gcc \$(FLAGS) -std=c11 -c \$< -o \$@
obj/%.cpp.o: /%.cpp
	@mkdir -p \$(dir \$@)
	g++ \$(FLAGS) -std=c++17 -c \$< -o \$@
MAKE
make -C "$OUT" -j"$(nproc)" peer >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
echo "built $OUT/peer"
