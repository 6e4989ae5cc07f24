// Test vectors for Temper's GgmlDequant from ggml itself: for each tensor type a GGUF file may hold (f32, f16, bf16,
// q4_0, q4_1, q5_0, q5_1, q8_0, q2_K..q6_K) it quantises one seeded pseudo-random row of N = 512 f32 values with
// ggml's reference quantiser (the type traits' from_float_ref: quantize_row_*_ref) and writes
//   TYPE.bin  the quantised bytes (N / block values blocks, as a GGUF tensor stores them)
//   TYPE.f32  ggml's dequantisation of those bytes (to_float: dequantize_row_*), N little-endian f32
// into the folder given as the only argument (tests/fixtures/ggml-quants), TYPE being ggml_type_name (q4_K, bf16, ...).
// The row is blocks of 32 values of varying magnitude (2^-6 .. 2^3), sign bias, a few outliers, scattered zeros
// and one all-zero block, so scales, mins and the zero-scale paths all vary.
// The library's ggml-quants.c is compiled with -std=c11, so gcc does not fuse a*b+c into FMA there; the values
// are plain float32 arithmetic, as Temper's C# computes it.
//
// Build and run (against the peer build of llama.cpp/ggml, bench/peer/llamacpp):
//   G=/tmp/llamacpp/ml/backend/ggml/ggml
//   gcc -O2 -std=c11 -I$G/include -I$G/src tests/reference/ggml_quants/make_vectors.c /tmp/peerbuild/libllama.a -lstdc++ -fopenmp -lm -lpthread -ldl -o /tmp/make_vectors
//   /tmp/make_vectors tests/fixtures/ggml-quants
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"

#define N 512

static uint64_t state = 0x9E3779B97F4A7C15ull;

static double uniform(void) // xorshift64*, in [0, 1)
{
    state ^= state >> 12; state ^= state << 25; state ^= state >> 27;
    return (double)((state * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

static void make_row(float * x)
{
    for (int b = 0; b < N / 32; b++) {
        double scale = ldexp(1.0, (b * 7) % 10 - 6);
        double bias = (b % 3 == 1) ? 0.8 : (b % 3 == 2) ? -0.8 : 0.0;
        for (int j = 0; j < 32; j++) {
            double g = uniform() + uniform() + uniform() + uniform() - 2.0; // roughly normal, sd ~0.58
            double v = scale * (g + bias);
            double r = uniform();
            if (r < 0.03) v *= 12.0;      // outlier
            else if (r < 0.08) v = 0.0;   // zero
            x[b * 32 + j] = b == 5 ? 0.0f : (float)v;
        }
    }
}

static void write_file(const char * dir, const char * name, const char * ext, const void * p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
    FILE * f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) { perror(path); exit(1); }
}

int main(int argc, char ** argv)
{
    if (argc != 2) { fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]); return 2; }
    const enum ggml_type types[] = {
        GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1,
        GGML_TYPE_Q8_0, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
    };
    float x[N], y[N];
    make_row(x);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const struct ggml_type_traits * tr = ggml_get_type_traits(types[t]);
        size_t bytes = ggml_row_size(types[t], N);
        void * q = malloc(bytes);
        if (types[t] == GGML_TYPE_F32) { memcpy(q, x, bytes); memcpy(y, x, bytes); }
        else { tr->from_float_ref(x, q, N); tr->to_float(q, y, N); }
        write_file(argv[1], tr->type_name, "bin", q, bytes);
        write_file(argv[1], tr->type_name, "f32", y, sizeof y);
        printf("%-5s block %3lld values in %3zu bytes: %zu bytes\n", tr->type_name, (long long)tr->blck_size, tr->type_size, bytes);
        free(q);
    }
    return 0;
}
