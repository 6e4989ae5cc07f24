// A llama.cpp peer for Temper's GGUF export and CPU decode, built against a llama.cpp source tree by build.sh.
//   peer logits MODEL.gguf IDS OUT.f32 [LORA.gguf]   IDS: comma-separated token ids, one sequence; writes [T, V]
//                                           f32 logits (with LORA: that adapter applied at scale 1)
//                                           (an f32 KV cache, so only the weights' type differs from Temper's f32 forward)
//   peer tokenize MODEL.gguf TEXT           prints the ids of TEXT as a JSON array (no BOS/EOS added; specials parsed)
//   peer decode MODEL.gguf P N THREADS      prefill P tokens, then decode N one at a time (greedy), as llama-bench's
//                                           pp/tg do; prints one JSON line with tokens/s of each phase
//   peer quantize IN.gguf OUT.gguf FTYPE    llama.cpp's own quantisation (llama-quantize): FTYPE a llama_ftype number,
//                                           e.g. 2 Q4_0, 7 Q8_0, 10 Q2_K, 12 Q3_K_M, 15 Q4_K_M, 17 Q5_K_M, 18 Q6_K; 0 (all f32)
//                                           decodes a quantised file with ggml's own dequantisation
#include "llama.h"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static void quiet(ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static llama_context * open(const char * path, int n_ctx, int threads, llama_model ** model, bool f32_cache = false) {
    llama_model_params mp = llama_model_default_params();
    mp.progress_callback = [](float, void *) { return true; };
    *model = llama_model_load_from_file(path, mp);
    if (!*model) { fprintf(stderr, "%s: llama.cpp could not load it\n", path); exit(2); }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_ctx;
    cp.n_ubatch = n_ctx;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    if (f32_cache) { cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32; cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED; }
    llama_context * ctx = llama_init_from_model(*model, cp);
    if (!ctx) { fprintf(stderr, "%s: no context\n", path); exit(2); }
    return ctx;
}

static void decode(llama_context * ctx, const std::vector<llama_token> & ids, int pos0, bool all_logits) {
    llama_batch b = llama_batch_init((int)ids.size(), 0, 1);
    for (size_t i = 0; i < ids.size(); i++) {
        b.token[i] = ids[i];
        b.pos[i] = pos0 + (int)i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = all_logits || i + 1 == ids.size();
    }
    b.n_tokens = (int)ids.size();
    if (llama_decode(ctx, b) != 0) { fprintf(stderr, "llama_decode failed\n"); exit(2); }
    llama_batch_free(b);
}

static llama_token argmax(const float * l, int v) {
    int best = 0;
    for (int i = 1; i < v; i++) if (l[i] > l[best]) best = i;
    return best;
}

int main(int argc, char ** argv) {
    if (argc < 3) { fprintf(stderr, "usage: peer logits|tokenize|decode MODEL.gguf ...\n"); return 2; }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    std::string mode = argv[1];
    llama_model * model = nullptr;
    if (mode == "logits" && (argc == 5 || argc == 6)) {
        std::vector<llama_token> ids;
        for (char * p = strtok(argv[3], ","); p; p = strtok(nullptr, ",")) ids.push_back(atoi(p));
        llama_context * ctx = open(argv[2], (int)ids.size() < 64 ? 64 : (int)ids.size(), 1, &model, true);
        if (argc == 6) {
            llama_adapter_lora * lora = llama_adapter_lora_init(model, argv[5]);
            if (!lora || llama_set_adapter_lora(ctx, lora, 1.0f) != 0) { fprintf(stderr, "%s: llama.cpp could not apply it\n", argv[5]); return 2; }
        }
        decode(ctx, ids, 0, true);
        int v = llama_vocab_n_tokens(llama_model_get_vocab(model));
        FILE * f = fopen(argv[4], "wb");
        for (size_t i = 0; i < ids.size(); i++) fwrite(llama_get_logits_ith(ctx, (int)i), sizeof(float), v, f);
        fclose(f);
        printf("wrote %zu x %d logits\n", ids.size(), v);
    } else if (mode == "tokenize" && argc == 4) {
        llama_context * ctx = open(argv[2], 64, 1, &model);
        (void)ctx;
        const llama_vocab * vocab = llama_model_get_vocab(model);
        std::vector<llama_token> ids(strlen(argv[3]) + 16);
        int n = llama_tokenize(vocab, argv[3], (int)strlen(argv[3]), ids.data(), (int)ids.size(), false, true);
        printf("[");
        for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
        printf("]\n");
    } else if (mode == "decode" && argc == 6) {
        int p = atoi(argv[3]), n = atoi(argv[4]), threads = atoi(argv[5]);
        llama_context * ctx = open(argv[2], p + n + 8, threads, &model);
        int v = llama_vocab_n_tokens(llama_model_get_vocab(model));
        std::vector<llama_token> prompt(p);
        for (int i = 0; i < p; i++) prompt[i] = (i * 7919 + 13) % v;
        decode(ctx, {prompt[0]}, 0, false); // warm-up: one token
        llama_memory_clear(llama_get_memory(ctx), true);
        auto t0 = std::chrono::steady_clock::now();
        decode(ctx, prompt, 0, false);
        auto t1 = std::chrono::steady_clock::now();
        llama_token next = argmax(llama_get_logits_ith(ctx, -1), v);
        for (int i = 0; i < n; i++) {
            decode(ctx, {next}, p + i, false);
            next = argmax(llama_get_logits_ith(ctx, -1), v);
        }
        auto t2 = std::chrono::steady_clock::now();
        double pre = std::chrono::duration<double>(t1 - t0).count(), dec = std::chrono::duration<double>(t2 - t1).count();
        printf("{\"prompt\": %d, \"tokens\": %d, \"threads\": %d, \"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f}\n", p, n, threads, p / pre, n / dec);
    } else if (mode == "quantize" && argc == 5) {
        llama_model_quantize_params qp = llama_model_quantize_default_params();
        qp.ftype = (llama_ftype)atoi(argv[4]);
        qp.allow_requantize = true; // FTYPE 0 (all f32) then writes llama.cpp's own decoding of a quantised file
        if (llama_model_quantize(argv[2], argv[3], &qp) != 0) { fprintf(stderr, "%s: quantisation failed\n", argv[2]); return 2; }
        printf("wrote %s\n", argv[3]);
    } else {
        fprintf(stderr, "usage: peer logits MODEL IDS OUT | tokenize MODEL TEXT | decode MODEL P N THREADS | quantize IN OUT FTYPE\n");
        return 2;
    }
    llama_backend_free();
    return 0;
}
