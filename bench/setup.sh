#!/usr/bin/env bash
# Installs the benchmark peers: Debian's OpenBLAS (libopenblas.so.0, the CPU sgemm peer of the GEMM
# benchmarks). Needs root (apt-get).
set -euo pipefail
apt-get update
apt-get install -y libopenblas0
