/*
 * c-host: a C program linked against libtemper, as a game engine or native app would link it; it is
 * also the native acceptance test (ctest runs each check with dotnet off PATH and DOTNET_ROOT unset).
 *
 *   c-host demo   MODEL_DIR [PROMPT]  chat-render, tokenize and stream a greedy reply (then one constrained to a JSON
 *                                     schema); prints timings
 *   c-host logits FIXTURE_DIR         logits (plain and padded) vs reference.safetensors
 *   c-host greedy FIXTURE_DIR         greedy ids vs reference.json greedy.output_ids; a callback stop, a
 *                                     stop string, frequency and presence penalties
 *   c-host adapter FIXTURE_DIR        adapter apply / remove / merge vs lora.logits, logits, merged.logits
 *   c-host train  FIXTURE_DIR         20 LoRA SFT steps on trainer/sft.jsonl, loss falling; push; save;
 *                                     DoRA and prompt-tuning steps, loss falling; the prompt saved, applied, merge refused;
 *                                     step 0 from the fixture adapter vs trainer/trainer_reference.json;
 *                                     the same for DPO on trainer/dpo.jsonl, reward accuracy reaching 1
 *   c-host misuse FIXTURE_DIR         NULL/freed handles, bad UTF-8, missing paths, busy model, buffers
 *
 * FIXTURE_DIR is a model folder of ../shared/fixtures/hf (e.g. llama-tiny): the model and its
 * transformers/PEFT reference outputs side by side. Exit 0 = pass, 1 = fail, 77 = skipped.
 */
#include "temper.h"
#include "../common/fixture.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SKIP 77

static int g_failures = 0;
static double g_process_start = 0;

#define EXPECT(cond, ...) do { if (!(cond)) { g_failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

/* Runs a temper call that must succeed; on failure prints the status and message and returns 1. */
#define CHECK(call) do { int32_t rc_ = (call); if (rc_ < 0) { fprintf(stderr, "FAIL %s:%d: %s -> %s: %s\n", \
    __FILE__, __LINE__, #call, temper_status_name(rc_), temper_last_error()); return 1; } } while (0)

/* A call that must fail with the given status and leave a message. */
#define EXPECT_STATUS(call, want) do { int32_t rc_ = (call); \
    if (rc_ != (want)) { g_failures++; fprintf(stderr, "FAIL %s:%d: %s -> %s, expected %s (%s)\n", __FILE__, __LINE__, #call, \
        temper_status_name(rc_), temper_status_name(want), temper_last_error()); } \
    else if ((want) != TEMPER_OK && !*temper_last_error()) { g_failures++; fprintf(stderr, "FAIL %s:%d: %s: no message\n", __FILE__, __LINE__, #call); } \
    else if ((want) != TEMPER_OK) printf("  ok  %-58.58s %s: %s\n", #call, temper_status_name(rc_), temper_last_error()); } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char* join(const char* dir, const char* name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char* s = (char*)malloc(n);
    snprintf(s, n, "%s/%s", dir, name);
    return s;
}

/* The library is self-contained: no .NET runtime file may be mapped into this process, and the test
   runs with no DOTNET_ROOT and no dotnet on PATH. */
static void expect_no_dotnet(void) {
    EXPECT(getenv("DOTNET_ROOT") == NULL, "DOTNET_ROOT is set (%s)", getenv("DOTNET_ROOT"));
    const char* path = getenv("PATH");
    if (path) {
        char* copy = strdup(path);
        for (char* d = strtok(copy, ":"); d; d = strtok(NULL, ":")) {
            char* exe = join(d, "dotnet");
            EXPECT(access(exe, X_OK) != 0, "dotnet is on PATH (%s)", exe);
            free(exe);
        }
        free(copy);
    }
    FILE* maps = fopen("/proc/self/maps", "r");
    if (!maps) return;
    char line[1024];
    while (fgets(line, sizeof line, maps)) {
        EXPECT(!strstr(line, "libcoreclr") && !strstr(line, "libhostfxr") && !strstr(line, "libhostpolicy") &&
               !strstr(line, "System.Private.CoreLib"), "a .NET runtime file is mapped: %s", line);
    }
    fclose(maps);
}

/* ---- fixture access ------------------------------------------------------------------------- */

typedef struct reference {
    fx_tensor ids;              /* input_ids I32 [B,T] */
    fx_tensor mask;             /* attention_mask I32 [B,T] */
    int32_t batch, seq;
} reference;

static int load_reference(const char* dir, reference* r) {
    char err[512];
    char* path = join(dir, "reference.safetensors");
    int rc = fx_safetensors_read(path, "input_ids", &r->ids, err, sizeof err) ||
             fx_safetensors_read(path, "attention_mask", &r->mask, err, sizeof err);
    free(path);
    if (rc) { fprintf(stderr, "FAIL: %s\n", err); return -1; }
    if (strcmp(r->ids.dtype, "I32") || r->ids.rank != 2) { fprintf(stderr, "FAIL: input_ids is %s rank %d\n", r->ids.dtype, r->ids.rank); return -1; }
    r->batch = (int32_t)r->ids.shape[0];
    r->seq = (int32_t)r->ids.shape[1];
    return 0;
}

/* max |a-b| over the included positions <= 1e-4 x max |ref| (the fixtures' tolerance). */
static int compare_logits(const char* what, const char* dir, const char* name, const float* got, size_t n,
                          const int32_t* mask, int32_t vocab) {
    char err[512];
    fx_tensor ref;
    char* path = join(dir, "reference.safetensors");
    int rc = fx_safetensors_read(path, name, &ref, err, sizeof err);
    free(path);
    if (rc) { fprintf(stderr, "FAIL: %s\n", err); g_failures++; return -1; }
    if ((size_t)ref.elements != n || strcmp(ref.dtype, "F32")) {
        fprintf(stderr, "FAIL %s: reference %s has %lld %s values, got %zu\n", what, name, (long long)ref.elements, ref.dtype, n);
        g_failures++;
        fx_tensor_free(&ref);
        return -1;
    }
    const float* r = (const float*)ref.data;
    double max_ref = 0, max_err = 0;
    for (size_t i = 0; i < n; i++) {
        if (mask && !mask[i / (size_t)vocab]) continue;
        max_ref = fmax(max_ref, fabs(r[i]));
        max_err = fmax(max_err, fabs((double)r[i] - got[i]));
    }
    fx_tensor_free(&ref);
    int ok = max_ref > 0 && max_err <= 1e-4 * max_ref;
    printf("  %-6s %-34s max|err| %.3g  (limit 1e-4 x max|ref| = %.3g)\n", ok ? "ok" : "FAIL", what, max_err, 1e-4 * max_ref);
    if (!ok) g_failures++;
    return ok ? 0 : -1;
}

static int load_model(const char* dir, temper_model** model) {
    temper_model_options mo = temper_model_options_default();
    mo.threads = 2;
    CHECK(temper_model_load(dir, &mo, model));
    return 0;
}

/* ---- checks ---------------------------------------------------------------------------------- */

static int print_piece(int32_t token, const char* piece, void* user) {
    double* first = (double*)user;
    if (*first == 0) *first = now_s();
    (void)token;
    fputs(piece, stdout);
    fflush(stdout);
    return 0;
}

static int run_demo(const char* dir, const char* prompt_text, double first_call_s) {
    double t0 = now_s();
    temper_model* model = NULL;
    if (load_model(dir, &model)) return 1;
    double t_load = now_s() - t0;
    printf("libtemper %s: first call (runtime start-up) %.2f ms; model %s (vocab %d) loaded in %.1f ms\n", temper_version(),
           first_call_s * 1e3, dir, temper_model_vocab_size(model), t_load * 1e3);

    char messages[1024];
    snprintf(messages, sizeof messages, "[{\"role\": \"user\", \"content\": \"%s\"}]", prompt_text);
    int32_t need = temper_model_chat_render(model, messages, 1, NULL, 0);
    CHECK(need);
    char* prompt = (char*)malloc((size_t)need);
    CHECK(temper_model_chat_render(model, messages, 1, prompt, need));
    int32_t n = temper_model_tokenize(model, prompt, NULL, 0);
    CHECK(n);
    int32_t* ids = (int32_t*)malloc((size_t)n * sizeof(int32_t));
    CHECK(temper_model_tokenize(model, prompt, ids, n));
    printf("prompt: %d tokens\n---\n", n);

    temper_generate_options go = temper_generate_options_default();
    go.max_new_tokens = 32;
    temper_generate_result res;
    double first = 0, t1 = now_s();
    CHECK(temper_model_generate(model, ids, n, &go, print_piece, &first, NULL, 0, &res));
    double t2 = now_s();
    printf("\n---\n%d tokens (finish %d); time to first token %.1f ms (process start to first token %.1f ms); %.1f tok/s\n",
           res.generated, res.finish, (first - t1) * 1e3, (first - g_process_start) * 1e3, res.generated / (t2 - t1));

    /* The same prompt answered as JSON a game could act on: each token is constrained to the schema, and the
       reply ends (EOS) once the object is complete. */
    go = temper_generate_options_default();
    go.max_new_tokens = 96;
    go.json_schema = "{\"type\": \"object\", \"properties\": {\"mood\": {\"enum\": [\"calm\", \"angry\"]}, "
                     "\"line\": {\"type\": \"string\", \"maxLength\": 12}}, \"required\": [\"mood\", \"line\"], \"additionalProperties\": false}";
    printf("json reply: ");
    CHECK(temper_model_generate(model, ids, n, &go, print_piece, &first, NULL, 0, &res));
    printf("\n---\n%d tokens (finish %d)\n", res.generated, res.finish);
    if (res.finish != TEMPER_FINISH_EOS) {
        fprintf(stderr, "the JSON reply did not end at EOS (finish %d)\n", res.finish);
        return 1;
    }
    free(ids);
    free(prompt);
    CHECK(temper_model_free(model));
    return 0;
}

static int run_logits(const char* dir) {
    reference r;
    if (load_reference(dir, &r)) return 1;
    temper_model* model = NULL;
    if (load_model(dir, &model)) return 1;
    int32_t vocab = temper_model_vocab_size(model);
    CHECK(vocab);
    size_t n = (size_t)r.batch * r.seq * vocab;
    float* logits = (float*)malloc(n * sizeof(float));
    CHECK(temper_model_logits(model, (const int32_t*)r.ids.data, NULL, r.batch, r.seq, logits, n));
    compare_logits("logits", dir, "logits", logits, n, NULL, vocab);
    CHECK(temper_model_logits(model, (const int32_t*)r.ids.data, (const int32_t*)r.mask.data, r.batch, r.seq, logits, n));
    compare_logits("masked logits (unpadded positions)", dir, "masked_logits", logits, n, (const int32_t*)r.mask.data, vocab);
    free(logits);
    CHECK(temper_model_free(model));
    fx_tensor_free(&r.ids);
    fx_tensor_free(&r.mask);
    return 0;
}

typedef struct stream_log { int calls; int32_t last; } stream_log;

static int count_tokens(int32_t token, const char* piece, void* user) {
    stream_log* s = (stream_log*)user;
    (void)piece;
    s->calls++;
    s->last = token;
    return 0;
}

typedef struct stop_log { int calls; int limit; } stop_log;

typedef struct text_log { char text[1024]; size_t length; } text_log;

static int append_piece(int32_t token, const char* piece, void* user) {
    text_log* t = (text_log*)user;
    size_t n = strlen(piece);
    (void)token;
    if (t->length + n < sizeof t->text) {
        memcpy(t->text + t->length, piece, n + 1);
        t->length += n;
    }
    return 0;
}

static int stop_after(int32_t token, const char* piece, void* user) {
    stop_log* s = (stop_log*)user;
    (void)token; (void)piece;
    return ++s->calls >= s->limit;
}

static int run_greedy(const char* dir) {
    char err[512];
    char* path = join(dir, "reference.json");
    fx_json* ref = fx_json_load(path, err, sizeof err);
    free(path);
    if (!ref) { fprintf(stderr, "FAIL: %s\n", err); return 1; }
    int32_t n_prompt = 0, n_out = 0;
    int32_t* prompt = fx_json_int_array(fx_json_path(ref, "greedy.prompt_ids"), &n_prompt);
    int32_t* expected = fx_json_int_array(fx_json_path(ref, "greedy.output_ids"), &n_out);
    if (!prompt || !expected || n_out <= n_prompt) { fprintf(stderr, "FAIL: reference.json has no greedy.prompt_ids/output_ids\n"); return 1; }
    int32_t n_new = n_out - n_prompt;  /* output_ids = prompt + continuation, as generate() returns them */

    temper_model* model = NULL;
    if (load_model(dir, &model)) return 1;
    temper_generate_options go = temper_generate_options_default();
    go.max_new_tokens = n_new;
    int32_t* got = (int32_t*)calloc((size_t)n_new, sizeof(int32_t));
    temper_generate_result res;
    stream_log log = { 0, -1 };
    CHECK(temper_model_generate(model, prompt, n_prompt, &go, count_tokens, &log, got, n_new, &res));
    EXPECT(res.generated == n_new, "generated %d tokens, the reference has %d", res.generated, n_new);
    EXPECT(log.calls == res.generated, "the callback ran %d times for %d tokens", log.calls, res.generated);
    int same = res.generated == n_new;
    for (int32_t i = 0; i < n_new && i < res.generated; i++)
        if (got[i] != expected[n_prompt + i]) {
            EXPECT(0, "token %d: got %d, reference %d", i, got[i], expected[n_prompt + i]);
            same = 0;
        }
    printf("  %-6s greedy: %d new tokens after a %d-token prompt %s the reference\n", same ? "ok" : "FAIL", n_new, n_prompt,
           same ? "equal" : "differ from");

    /* Without a callback the same ids come out; a callback returning non-zero stops generation. */
    CHECK(temper_model_generate(model, prompt, n_prompt, &go, NULL, NULL, got, n_new, &res));
    EXPECT(res.generated == n_new && res.finish == TEMPER_FINISH_LENGTH && got[n_new - 1] == expected[n_out - 1],
           "without callback: %d tokens, finish %d", res.generated, res.finish);
    stop_log stop = { 0, 3 };
    CHECK(temper_model_generate(model, prompt, n_prompt, &go, stop_after, &stop, NULL, 0, &res));
    EXPECT(res.generated == 3 && res.finish == TEMPER_FINISH_STOPPED && stop.calls == 3,
           "stopping after 3 tokens: %d generated, finish %d, %d callbacks", res.generated, res.finish, stop.calls);

    /* A stop string: the text of the reference's first 3 new tokens ends the generation at the third,
       which is still streamed, so the text holds it (as `temper generate --stop`). */
    char stop_text[256];
    CHECK(temper_model_detokenize(model, expected + n_prompt, 3, 1, stop_text, sizeof stop_text));
    const char* stops[] = { "a stop string the fixture never writes", stop_text };
    temper_generate_options gs = go;
    gs.stop = stops;
    gs.stop_count = 2;
    text_log text = { "", 0 };
    CHECK(temper_model_generate(model, prompt, n_prompt, &gs, append_piece, &text, got, n_new, &res));
    int stop_ok = res.finish == TEMPER_FINISH_STOP_STRING && res.generated == 3 && !strcmp(text.text, stop_text);
    printf("  %-6s stop string \"%s\": %d tokens, finish %d, text \"%s\"\n", stop_ok ? "ok" : "FAIL", stop_text, res.generated,
           res.finish, text.text);
    if (!stop_ok) g_failures++;

    /* OpenAI's penalties over the generated tokens: the reference's greedy continuation repeats itself; a
       presence penalty makes the same greedy decoding pick other tokens once one has been used. */
    temper_generate_options gp = go;
    gp.frequency_penalty = 0.5f;
    gp.presence_penalty = 1.5f;
    CHECK(temper_model_generate(model, prompt, n_prompt, &gp, NULL, NULL, got, n_new, &res));
    int differ = 0, repeats = 0;
    for (int32_t i = 0; i < n_new && i < res.generated; i++) {
        differ += got[i] != expected[n_prompt + i];
        repeats += i > 0 && got[i] == got[i - 1];
    }
    int penalty_ok = res.generated == n_new && differ > 0 && repeats < n_new / 2;
    printf("  %-6s frequency 0.5 / presence 1.5: %d of %d tokens differ from the unpenalised ones, %d immediate repeats\n",
           penalty_ok ? "ok" : "FAIL", differ, n_new, repeats);
    if (!penalty_ok) g_failures++;
    free(got);
    free(prompt);
    free(expected);
    fx_json_free(ref);
    CHECK(temper_model_free(model));
    return 0;
}

static int run_adapter(const char* dir) {
    reference r;
    if (load_reference(dir, &r)) return 1;
    temper_model* model = NULL;
    if (load_model(dir, &model)) return 1;
    int32_t vocab = temper_model_vocab_size(model);
    size_t n = (size_t)r.batch * r.seq * vocab;
    float* logits = (float*)malloc(n * sizeof(float));
    const int32_t* ids = (const int32_t*)r.ids.data;

    temper_adapter* adapter = NULL;
    char* adapter_dir = join(dir, "adapter");
    CHECK(temper_adapter_load(adapter_dir, &adapter));
    CHECK(temper_adapter_apply(model, adapter));
    CHECK(temper_adapter_free(adapter));   /* the model keeps its own copy of the applied adapter */
    CHECK(temper_model_logits(model, ids, NULL, r.batch, r.seq, logits, n));
    compare_logits("adapter applied (lora.logits)", dir, "lora.logits", logits, n, NULL, vocab);

    CHECK(temper_adapter_remove(model));
    CHECK(temper_model_logits(model, ids, NULL, r.batch, r.seq, logits, n));
    compare_logits("adapter removed (logits)", dir, "logits", logits, n, NULL, vocab);

    CHECK(temper_adapter_load(adapter_dir, &adapter));
    CHECK(temper_adapter_apply(model, adapter));   /* merge detaches this first */
    CHECK(temper_adapter_merge(model, adapter));
    CHECK(temper_adapter_free(adapter));
    CHECK(temper_model_logits(model, ids, NULL, r.batch, r.seq, logits, n));
    compare_logits("adapter merged (merged.logits)", dir, "merged.logits", logits, n, NULL, vocab);

    free(adapter_dir);
    free(logits);
    CHECK(temper_model_free(model));
    fx_tensor_free(&r.ids);
    fx_tensor_free(&r.mask);
    return 0;
}

typedef struct metrics_log { int calls; float first_loss, last_loss; int last_step; } metrics_log;

static void on_metrics(const temper_step_metrics* m, void* user) {
    metrics_log* log = (metrics_log*)user;
    if (log->calls++ == 0) log->first_loss = m->loss;
    log->last_loss = m->loss;
    log->last_step = m->step;
    printf("  step %2d  loss %.4f  grad_norm %.4f  lr %.2e  %.0f tok/s%s\n", m->step, m->loss, m->grad_norm, m->learning_rate,
           m->tokens_per_second, m->skipped ? "  (skipped)" : "");
}

typedef struct dpo_log { int calls; float last_accuracy, last_margin, first_margin; } dpo_log;

static void on_dpo_metrics(const temper_step_metrics* m, void* user) {
    dpo_log* log = (dpo_log*)user;
    if (log->calls++ == 0) log->first_margin = m->reward_margin;
    log->last_accuracy = m->reward_accuracy;
    log->last_margin = m->reward_margin;
}

static void on_metrics_norm(const temper_step_metrics* m, void* user) {
    *(float*)user = m->grad_norm;
}

static int run_train(const char* dir) {
    temper_model* model = NULL;
    if (load_model(dir, &model)) return 1;
    char* data = join(dir, "trainer/sft.jsonl");
    temper_trainer_options to = temper_trainer_options_default();
    to.lora_rank = 8;
    to.lora_alpha = 16;
    to.learning_rate = 1e-2f;
    to.batch_size = 4;
    to.scheduler = TEMPER_LR_CONSTANT;
    to.seed = 1;
    temper_trainer* trainer = NULL;
    int32_t rc = temper_trainer_init(model, &to, data, &trainer);
    if (rc == TEMPER_E_UNSUPPORTED) {
        printf("SKIP: %s\n", temper_last_error());
        temper_model_free(model);
        free(data);
        return SKIP;
    }
    CHECK(rc);
    metrics_log log = { 0, 0, 0, 0 };
    CHECK(temper_trainer_set_metrics_callback(trainer, on_metrics, &log));
    const int steps = 20;
    float losses[20];
    for (int i = 0; i < steps; i++) CHECK(temper_trainer_step(trainer, &losses[i]));
    EXPECT(log.calls == steps && log.last_step == steps, "metrics callback: %d calls, last step %d", log.calls, log.last_step);
    float head = (losses[0] + losses[1] + losses[2]) / 3, tail = (losses[17] + losses[18] + losses[19]) / 3;
    int falling = isfinite(head) && isfinite(tail) && tail < head * 0.9f;
    printf("  %-6s loss falls: mean of steps 1-3 %.4f -> steps 18-20 %.4f\n", falling ? "ok" : "FAIL", head, tail);
    if (!falling) g_failures++;

    /* Examples pushed one by one train too, and bad ones are refused with a message. */
    CHECK(temper_trainer_push(trainer, "{\"messages\": [{\"role\": \"user\", \"content\": \"Say hi\"}, {\"role\": \"assistant\", \"content\": \"hi\"}]}"));
    CHECK(temper_trainer_push(trainer, "{\"prompt\": \"2+2=\", \"completion\": \"4\"}"));
    EXPECT_STATUS(temper_trainer_push(trainer, "{\"messages\": 5}"), TEMPER_E_INVALID_DATA);
    EXPECT_STATUS(temper_trainer_push(trainer, "not json"), TEMPER_E_INVALID_DATA);
    float loss;
    CHECK(temper_trainer_step(trainer, &loss));
    EXPECT(isfinite(loss), "loss after pushing examples is %f", loss);

    /* The trainer's adapter round-trips through a PEFT folder. */
    char tmpl[] = "/tmp/temper-c-host-XXXXXX";
    char* out = mkdtemp(tmpl);
    EXPECT(out != NULL, "mkdtemp failed");
    CHECK(temper_trainer_save_adapter(trainer, out));
    CHECK(temper_trainer_free(trainer));
    temper_adapter* adapter = NULL;
    CHECK(temper_adapter_load(out, &adapter));
    CHECK(temper_adapter_apply(model, adapter));
    CHECK(temper_adapter_free(adapter));
    char* f1 = join(out, "adapter_config.json");
    char* f2 = join(out, "adapter_model.safetensors");
    remove(f1);
    remove(f2);
    rmdir(out);
    free(f1);
    free(f2);

    /* Since 0.4.0: a DoRA adapter (use_dora) and a prompt-tuning adapter (prompt_tuning_tokens) train the same way.
       The model samples the prompt being trained; it is saved as PROMPT_TUNING, applied, and cannot be merged. */
    CHECK(temper_adapter_remove(model));
    temper_trainer_options kinds = to;
    kinds.batch_size = 8;   /* all six examples every step, so step 1's loss and the last one's compare */
    kinds.use_dora = 1;
    CHECK(temper_trainer_init(model, &kinds, data, &trainer));
    for (int i = 0; i < 6; i++) CHECK(temper_trainer_step(trainer, &losses[i]));
    CHECK(temper_trainer_free(trainer));
    falling = isfinite(losses[5]) && losses[5] < losses[0];
    printf("  %-6s DoRA loss falls: step 1 %.4f -> step 6 %.4f\n", falling ? "ok" : "FAIL", losses[0], losses[5]);
    if (!falling) g_failures++;
    kinds.use_dora = 0;
    kinds.prompt_tuning_tokens = 4;
    kinds.learning_rate = 0.1f;
    CHECK(temper_trainer_init(model, &kinds, data, &trainer));
    for (int i = 0; i < 8; i++) CHECK(temper_trainer_step(trainer, &losses[i]));
    falling = isfinite(losses[7]) && losses[7] < losses[0];
    printf("  %-6s prompt-tuning loss falls: step 1 %.4f -> step 8 %.4f\n", falling ? "ok" : "FAIL", losses[0], losses[7]);
    if (!falling) g_failures++;
    const int32_t hello[] = { 508, 267, 263 };
    temper_generate_options go = temper_generate_options_default();
    go.max_new_tokens = 4;
    temper_generate_result gr;
    CHECK(temper_model_generate(model, hello, 3, &go, NULL, NULL, NULL, 0, &gr));   /* with the prompt being trained */
    char ptmpl[] = "/tmp/temper-c-host-prompt-XXXXXX";
    char* pout = mkdtemp(ptmpl);
    EXPECT(pout != NULL, "mkdtemp failed");
    CHECK(temper_trainer_save_adapter(trainer, pout));
    CHECK(temper_trainer_free(trainer));
    CHECK(temper_adapter_load(pout, &adapter));
    CHECK(temper_adapter_apply(model, adapter));
    CHECK(temper_model_generate(model, hello, 3, &go, NULL, NULL, NULL, 0, &gr));
    CHECK(temper_adapter_remove(model));
    EXPECT_STATUS(temper_adapter_merge(model, adapter), TEMPER_E_INVALID_ARGUMENT);
    CHECK(temper_adapter_free(adapter));
    kinds.use_dora = 1;
    EXPECT_STATUS(temper_trainer_init(model, &kinds, data, &trainer), TEMPER_E_INVALID_ARGUMENT);
    f1 = join(pout, "adapter_config.json");
    f2 = join(pout, "adapter_model.safetensors");
    remove(f1);
    remove(f2);
    rmdir(pout);
    free(f1);
    free(f2);

    /* Since 0.5.0: an (IA)^3 adapter (ia3: one scaling vector per projection PEFT targets) trains the same way, is saved as
       IA3 and is applied and removed like a LoRA; min_new_tokens keeps EOS and stop strings off for that many tokens. */
    kinds = to;
    kinds.batch_size = 8;
    kinds.ia3 = 1;
    kinds.learning_rate = 0.05f;
    CHECK(temper_trainer_init(model, &kinds, data, &trainer));
    for (int i = 0; i < 6; i++) CHECK(temper_trainer_step(trainer, &losses[i]));
    falling = isfinite(losses[5]) && losses[5] < losses[0];
    printf("  %-6s IA3 loss falls: step 1 %.4f -> step 6 %.4f\n", falling ? "ok" : "FAIL", losses[0], losses[5]);
    if (!falling) g_failures++;
    char itmpl[] = "/tmp/temper-c-host-ia3-XXXXXX";
    char* iout = mkdtemp(itmpl);
    EXPECT(iout != NULL, "mkdtemp failed");
    CHECK(temper_trainer_save_adapter(trainer, iout));
    CHECK(temper_trainer_free(trainer));
    CHECK(temper_adapter_load(iout, &adapter));
    CHECK(temper_adapter_apply(model, adapter));
    go.min_new_tokens = 4;   /* EOS on: still 4 tokens */
    go.ignore_eos = 0;
    CHECK(temper_model_generate(model, hello, 3, &go, NULL, NULL, NULL, 0, &gr));
    EXPECT(gr.generated == 4, "min_new_tokens 4 with max_new_tokens 4 did not give 4 tokens");
    go.min_new_tokens = -1;
    EXPECT_STATUS(temper_model_generate(model, hello, 3, &go, NULL, NULL, NULL, 0, &gr), TEMPER_E_INVALID_ARGUMENT);
    go.min_new_tokens = 0;
    CHECK(temper_adapter_remove(model));
    CHECK(temper_adapter_free(adapter));
    kinds.use_rslora = 1;   /* a LoRA-only field with ia3: refused by name */
    EXPECT_STATUS(temper_trainer_init(model, &kinds, data, &trainer), TEMPER_E_INVALID_ARGUMENT);
    EXPECT(strstr(temper_last_error(), "use_rslora") != NULL, "the ia3 refusal does not name use_rslora");
    f1 = join(iout, "adapter_config.json");
    f2 = join(iout, "adapter_model.safetensors");
    remove(f1);
    remove(f2);
    rmdir(iout);
    free(f1);
    free(f2);

    /* Step 0 from the fixture adapter on all six examples matches TRL (trainer_reference.json). */
    char err[512];
    char* ref_path = join(dir, "trainer/trainer_reference.json");
    fx_json* ref = fx_json_load(ref_path, err, sizeof err);
    free(ref_path);
    if (!ref) { fprintf(stderr, "FAIL: %s\n", err); return 1; }
    const fx_json* ref_loss = fx_json_path(ref, "sft.loss");
    const fx_json* ref_norm = fx_json_path(ref, "sft.grad_norm");
    if (!ref_loss || !ref_norm) { fprintf(stderr, "FAIL: trainer_reference.json has no sft.loss / sft.grad_norm\n"); return 1; }
    CHECK(temper_adapter_remove(model));
    temper_trainer_options parity = temper_trainer_options_default();
    char* fixture_adapter = join(dir, "adapter");
    parity.init_adapter = fixture_adapter;
    parity.batch_size = 64;
    float grad_norm = 0;
    CHECK(temper_trainer_init(model, &parity, data, &trainer));
    free(fixture_adapter);
    CHECK(temper_trainer_set_metrics_callback(trainer, on_metrics_norm, &grad_norm));
    CHECK(temper_trainer_step(trainer, &loss));
    CHECK(temper_trainer_free(trainer));
    double want_loss = ref_loss->number, want_norm = ref_norm->number;
    int loss_ok = fabs(loss - want_loss) <= 1e-4 * want_loss, norm_ok = fabs(grad_norm - want_norm) <= 1e-3 * want_norm;
    printf("  %-6s step 0 from the fixture adapter: loss %.6f (TRL %.6f), grad_norm %.6f (TRL %.6f)\n",
           loss_ok && norm_ok ? "ok" : "FAIL", loss, want_loss, grad_norm, want_norm);
    if (!loss_ok || !norm_ok) g_failures++;

    /* DPO: step 0 from the fixture adapter matches TRL (reference = the base without the adapter)... */
    char* dpo_data = join(dir, "trainer/dpo.jsonl");
    const fx_json* ref_dpo_loss = fx_json_path(ref, "dpo.loss");
    const fx_json* ref_dpo_norm = fx_json_path(ref, "dpo.grad_norm");
    if (!ref_dpo_loss || !ref_dpo_norm) { fprintf(stderr, "FAIL: trainer_reference.json has no dpo.loss / dpo.grad_norm\n"); return 1; }
    temper_trainer_options dpo = temper_trainer_options_default();
    fixture_adapter = join(dir, "adapter");
    dpo.method = TEMPER_TRAIN_DPO;
    dpo.init_adapter = fixture_adapter;
    dpo.batch_size = 64;
    dpo.dpo_beta = 0.1f;
    CHECK(temper_trainer_init(model, &dpo, dpo_data, &trainer));
    free(fixture_adapter);
    CHECK(temper_trainer_set_metrics_callback(trainer, on_metrics_norm, &grad_norm));
    CHECK(temper_trainer_step(trainer, &loss));
    CHECK(temper_trainer_free(trainer));
    want_loss = ref_dpo_loss->number;
    want_norm = ref_dpo_norm->number;
    loss_ok = fabs(loss - want_loss) <= 1e-4 * want_loss;
    norm_ok = fabs(grad_norm - want_norm) <= 1e-3 * want_norm;
    printf("  %-6s DPO step 0 from the fixture adapter: loss %.6f (TRL %.6f), grad_norm %.6f (TRL %.6f)\n",
           loss_ok && norm_ok ? "ok" : "FAIL", loss, want_loss, grad_norm, want_norm);
    if (!loss_ok || !norm_ok) g_failures++;
    fx_json_free(ref);

    /* ... and 20 DPO steps of a fresh LoRA lower the loss and rank the chosen answers first. */
    to.method = TEMPER_TRAIN_DPO;
    to.dpo_beta = 0.1f;
    CHECK(temper_trainer_init(model, &to, dpo_data, &trainer));
    dpo_log dlog = { 0, 0, 0, 0 };
    CHECK(temper_trainer_set_metrics_callback(trainer, on_dpo_metrics, &dlog));
    for (int i = 0; i < steps; i++) CHECK(temper_trainer_step(trainer, &losses[i]));
    head = (losses[0] + losses[1] + losses[2]) / 3;
    tail = (losses[17] + losses[18] + losses[19]) / 3;
    falling = isfinite(head) && isfinite(tail) && tail < head * 0.5f && dlog.last_accuracy >= 0.99f;
    printf("  %-6s DPO loss falls: mean of steps 1-3 %.4f -> steps 18-20 %.4f, last reward accuracy %.2f, margin %.3f\n",
           falling ? "ok" : "FAIL", head, tail, dlog.last_accuracy, dlog.last_margin);
    if (!falling) g_failures++;
    CHECK(temper_trainer_push(trainer, "{\"prompt\": \"2+2=\", \"chosen\": \"4\", \"rejected\": \"5\"}"));
    EXPECT_STATUS(temper_trainer_push(trainer, "{\"prompt\": \"2+2=\", \"chosen\": \"4\"}"), TEMPER_E_INVALID_DATA);
    CHECK(temper_trainer_step(trainer, &loss));
    EXPECT(isfinite(loss), "DPO loss after pushing a pair is %f", loss);
    CHECK(temper_trainer_free(trainer));
    to.dpo_beta = 0;
    EXPECT_STATUS(temper_trainer_init(model, &to, dpo_data, &trainer), TEMPER_E_INVALID_ARGUMENT);
    free(dpo_data);
    free(data);
    CHECK(temper_model_free(model));
    return 0;
}

/* ---- misuse ---------------------------------------------------------------------------------- */

typedef struct busy_probe {
    temper_model* model;
    const int32_t* ids;
    int32_t status_other_thread;
    int32_t status_same_thread;
    int probed;
} busy_probe;

static void* probe_thread(void* arg) {
    busy_probe* p = (busy_probe*)arg;
    float logits[512];
    p->status_other_thread = temper_model_logits(p->model, p->ids, NULL, 1, 1, logits, 512);
    if (p->status_other_thread < 0) printf("  ok  %-58.58s %s: %s\n", "(other thread) temper_model_logits during generate",
                                           temper_status_name(p->status_other_thread), temper_last_error());
    return NULL;
}

/* While generation runs (inside its callback), another thread and this thread try the model. */
static int probe_during_generate(int32_t token, const char* piece, void* user) {
    busy_probe* p = (busy_probe*)user;
    (void)token; (void)piece;
    if (p->probed++) return 1;
    pthread_t t;
    pthread_create(&t, NULL, probe_thread, p);
    pthread_join(t, NULL);
    float logits[512];
    p->status_same_thread = temper_model_logits(p->model, p->ids, NULL, 1, 1, logits, 512);
    return 0;
}

typedef struct train_probe {
    temper_model* model;
    const int32_t* ids;
    int32_t status;
    int probed;
} train_probe;

static void* generate_thread(void* arg) {
    train_probe* p = (train_probe*)arg;
    temper_generate_options go = temper_generate_options_default();
    go.max_new_tokens = 2;
    p->status = temper_model_generate(p->model, p->ids, 2, &go, NULL, NULL, NULL, 0, NULL);
    if (p->status < 0) printf("  ok  %-58.58s %s: %s\n", "(other thread) temper_model_generate during a step",
                              temper_status_name(p->status), temper_last_error());
    return NULL;
}

/* Called at the end of a training step, still inside temper_trainer_step: generate from another thread. */
static void probe_during_step(const temper_step_metrics* m, void* user) {
    train_probe* p = (train_probe*)user;
    (void)m;
    if (p->probed++) return;
    pthread_t t;
    pthread_create(&t, NULL, generate_thread, p);
    pthread_join(t, NULL);
}

static int run_misuse(const char* dir) {
    const int32_t ids[4] = { 1, 2, 3, 4 };
    float logits[4 * 512];
    char text[64];
    temper_model* model = NULL;
    temper_adapter* adapter = NULL;
    temper_trainer* trainer = NULL;

    printf("NULL handles and pointers\n");
    EXPECT_STATUS(temper_model_vocab_size(NULL), TEMPER_E_INVALID_HANDLE);
    EXPECT_STATUS(temper_model_tokenize(NULL, "hi", NULL, 0), TEMPER_E_INVALID_HANDLE);
    EXPECT_STATUS(temper_model_logits(NULL, ids, NULL, 1, 4, logits, 2048), TEMPER_E_INVALID_HANDLE);
    EXPECT_STATUS(temper_model_generate(NULL, ids, 4, NULL, NULL, NULL, NULL, 0, NULL), TEMPER_E_INVALID_HANDLE);
    EXPECT_STATUS(temper_adapter_apply(NULL, NULL), TEMPER_E_INVALID_HANDLE);
    EXPECT_STATUS(temper_trainer_step(NULL, NULL), TEMPER_E_INVALID_HANDLE);
    EXPECT_STATUS(temper_model_load(NULL, NULL, &model), TEMPER_E_INVALID_ARGUMENT);
    EXPECT_STATUS(temper_model_load(dir, NULL, NULL), TEMPER_E_INVALID_ARGUMENT);
    EXPECT(temper_model_free(NULL) == TEMPER_OK && temper_adapter_free(NULL) == TEMPER_OK && temper_trainer_free(NULL) == TEMPER_OK,
           "freeing NULL must be a no-op");

    printf("missing paths, bad UTF-8, bad options\n");
    EXPECT_STATUS(temper_model_load("/nonexistent/temper-model", NULL, &model), TEMPER_E_NOT_FOUND);
    EXPECT(model == NULL, "a failed load must leave *model NULL");
    EXPECT_STATUS(temper_model_load("\xff\xfe not utf-8", NULL, &model), TEMPER_E_INVALID_UTF8);
    EXPECT_STATUS(temper_adapter_load("/nonexistent/temper-adapter", &adapter), TEMPER_E_NOT_FOUND);
    temper_model_options mo = temper_model_options_default();
    mo.device = TEMPER_DEVICE_CUDA; /* no GPU here, or (with one) the fixture's head dim of 16: unsupported either way */
    EXPECT_STATUS(temper_model_load(dir, &mo, &model), TEMPER_E_UNSUPPORTED);
    mo = temper_model_options_default();
    mo.threads = -1;
    EXPECT_STATUS(temper_model_load(dir, &mo, &model), TEMPER_E_INVALID_ARGUMENT);
    char* not_a_model = join(dir, "trainer");
    EXPECT_STATUS(temper_model_load(not_a_model, NULL, &model), TEMPER_E_NOT_FOUND);
    free(not_a_model);

    if (load_model(dir, &model)) return 1;
    EXPECT_STATUS(temper_model_tokenize(model, "caf\xc3", NULL, 0), TEMPER_E_INVALID_UTF8);
    EXPECT_STATUS(temper_model_chat_render(model, "[{\"role\": \"user\", \"content\": \"\xed\xa0\x80\"}]", 1, NULL, 0), TEMPER_E_INVALID_UTF8);
    EXPECT_STATUS(temper_model_chat_render(model, "{not json", 1, NULL, 0), TEMPER_E_INVALID_ARGUMENT);
    EXPECT_STATUS(temper_model_chat_render(model, "{\"role\": \"user\"}", 1, NULL, 0), TEMPER_E_INVALID_ARGUMENT);
    int32_t bad_ids[2] = { 1, 1 << 30 };
    EXPECT_STATUS(temper_model_logits(model, bad_ids, NULL, 1, 2, logits, 2048), TEMPER_E_INVALID_ARGUMENT);
    EXPECT_STATUS(temper_model_logits(model, ids, NULL, 1, 4, logits, 100), TEMPER_E_BUFFER_TOO_SMALL);
    EXPECT_STATUS(temper_model_logits(model, ids, NULL, 0, 4, logits, 2048), TEMPER_E_INVALID_ARGUMENT);
    EXPECT_STATUS(temper_model_detokenize(model, bad_ids, 2, 0, text, sizeof text), TEMPER_E_INVALID_ARGUMENT);
    EXPECT_STATUS(temper_model_tokenize(model, "hello", NULL, 5), TEMPER_E_INVALID_ARGUMENT);
    temper_generate_options go = temper_generate_options_default();
    go.greedy = 0;
    go.top_p = 0;
    EXPECT_STATUS(temper_model_generate(model, ids, 4, &go, NULL, NULL, NULL, 0, NULL), TEMPER_E_INVALID_ARGUMENT);
    go = temper_generate_options_default();
    EXPECT_STATUS(temper_model_generate(model, ids, 0, &go, NULL, NULL, NULL, 0, NULL), TEMPER_E_INVALID_ARGUMENT);
    go.frequency_penalty = 2.5f;
    EXPECT_STATUS(temper_model_generate(model, ids, 4, &go, NULL, NULL, NULL, 0, NULL), TEMPER_E_INVALID_ARGUMENT);
    go = temper_generate_options_default();
    go.presence_penalty = -3.0f;
    EXPECT_STATUS(temper_model_generate(model, ids, 4, &go, NULL, NULL, NULL, 0, NULL), TEMPER_E_INVALID_ARGUMENT);
    go = temper_generate_options_default();
    const char* bad_stops[] = { "ok", NULL };
    go.stop = bad_stops;
    go.stop_count = 2;
    EXPECT_STATUS(temper_model_generate(model, ids, 4, &go, NULL, NULL, NULL, 0, NULL), TEMPER_E_INVALID_ARGUMENT);
    go.stop_count = -1;
    EXPECT_STATUS(temper_model_generate(model, ids, 4, &go, NULL, NULL, NULL, 0, NULL), TEMPER_E_INVALID_ARGUMENT);
    /* struct_size: a struct from {0} or memset, or one from another temper.h, is refused before it is read. */
    temper_generate_options zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    EXPECT_STATUS(temper_model_generate(model, ids, 4, &zeroed, NULL, NULL, NULL, 0, NULL), TEMPER_E_INVALID_ARGUMENT);
    go = temper_generate_options_default();
    go.struct_size = sizeof go - 4;   /* no version's size (0.4.0's, sizeof go - 8, is still taken) */
    EXPECT_STATUS(temper_model_generate(model, ids, 4, &go, NULL, NULL, NULL, 0, NULL), TEMPER_E_INVALID_ARGUMENT);
    /* structured output: json_object and json_schema exclude each other; a schema keyword outside the subset is named */
    go = temper_generate_options_default();
    go.json_object = 1;
    go.json_schema = "{\"type\": \"object\"}";
    EXPECT_STATUS(temper_model_generate(model, ids, 4, &go, NULL, NULL, NULL, 0, NULL), TEMPER_E_INVALID_ARGUMENT);
    go.json_object = 0;
    go.json_schema = "{\"type\": \"string\", \"format\": \"date\"}";
    EXPECT_STATUS(temper_model_generate(model, ids, 4, &go, NULL, NULL, NULL, 0, NULL), TEMPER_E_INVALID_ARGUMENT);
    EXPECT(strstr(temper_last_error(), "format") != NULL, "the refused schema keyword is named");
    temper_model* unloaded = NULL;
    temper_model_options short_mo = temper_model_options_default();
    short_mo.struct_size = 8;
    EXPECT_STATUS(temper_model_load(dir, &short_mo, &unloaded), TEMPER_E_INVALID_ARGUMENT);
    go = temper_generate_options_default();
    EXPECT(*temper_last_error() != 0, "last error is kept until the next call");
    EXPECT(temper_model_vocab_size(model) > 0 && *temper_last_error() == 0, "a successful call clears the last error");

    printf("size protocol\n");
    int32_t need = temper_model_tokenize(model, "hello world", NULL, 0);
    EXPECT(need > 0, "tokenize size query returned %d", need);
    int32_t small[1] = { -12345 };
    EXPECT(temper_model_tokenize(model, "hello world", small, 1) == need && (need == 1 || small[0] == -12345),
           "a too-small ids buffer must get the needed size and stay untouched");
    int32_t tneed = temper_model_detokenize(model, ids, 4, 0, NULL, 0);
    EXPECT(tneed >= 1, "detokenize size query returned %d", tneed);
    char tiny[1] = { 'x' };
    EXPECT(temper_model_detokenize(model, ids, 4, 0, tiny, 1) == tneed && (tneed == 1 || tiny[0] == 'x'),
           "a too-small text buffer must get the needed size and stay untouched");

    printf("busy model\n");
    busy_probe bp = { model, ids, 0, 0, 0 };
    go.max_new_tokens = 4;
    CHECK(temper_model_generate(model, ids, 2, &go, probe_during_generate, &bp, NULL, 0, NULL));
    EXPECT(bp.status_other_thread == TEMPER_E_BUSY, "logits from another thread during generate: %s", temper_status_name(bp.status_other_thread));
    EXPECT(bp.status_same_thread == TEMPER_E_BUSY, "logits from the token callback: %s", temper_status_name(bp.status_same_thread));
    CHECK(temper_model_logits(model, ids, NULL, 1, 4, logits, 2048));   /* free again afterwards */

    char* data = join(dir, "trainer/sft.jsonl");
    temper_trainer_options to = temper_trainer_options_default();
    to.batch_size = 2;
    int32_t rc = temper_trainer_init(model, &to, data, &trainer);
    free(data);
    if (rc == TEMPER_E_UNSUPPORTED) {
        printf("  (training not built in: %s; skipping the generate-during-step probe)\n", temper_last_error());
    } else {
        CHECK(rc);
        train_probe tp = { model, ids, 0, 0 };
        CHECK(temper_trainer_set_metrics_callback(trainer, probe_during_step, &tp));
        CHECK(temper_trainer_step(trainer, NULL));
        EXPECT(tp.status == TEMPER_E_BUSY, "generate from another thread during a training step: %s", temper_status_name(tp.status));
        EXPECT_STATUS(temper_model_free(model), TEMPER_E_BUSY);          /* a trainer is attached */
        EXPECT_STATUS(temper_adapter_remove(model), TEMPER_E_BUSY);      /* the trainer owns the adapter */
        temper_trainer* second = NULL;
        EXPECT_STATUS(temper_trainer_init(model, &to, NULL, &second), TEMPER_E_BUSY);
        /* wrong-kind handle: a trainer passed as a model */
        EXPECT_STATUS(temper_model_vocab_size((temper_model*)trainer), TEMPER_E_INVALID_HANDLE);
        temper_trainer* stale = trainer;
        CHECK(temper_trainer_free(trainer));
        EXPECT_STATUS(temper_trainer_step(stale, NULL), TEMPER_E_INVALID_HANDLE);
    }

    printf("freed handles\n");
    char* adapter_dir = join(dir, "adapter");
    CHECK(temper_adapter_load(adapter_dir, &adapter));
    free(adapter_dir);
    temper_adapter* stale_adapter = adapter;
    CHECK(temper_adapter_free(adapter));
    EXPECT_STATUS(temper_adapter_apply(model, stale_adapter), TEMPER_E_INVALID_HANDLE);
    EXPECT_STATUS(temper_adapter_free(stale_adapter), TEMPER_E_INVALID_HANDLE);
    EXPECT_STATUS(temper_adapter_apply(model, (const temper_adapter*)model), TEMPER_E_INVALID_HANDLE);
    temper_model* stale = model;
    CHECK(temper_model_free(model));
    EXPECT_STATUS(temper_model_vocab_size(stale), TEMPER_E_INVALID_HANDLE);
    EXPECT_STATUS(temper_model_generate(stale, ids, 4, NULL, NULL, NULL, NULL, 0, NULL), TEMPER_E_INVALID_HANDLE);
    EXPECT_STATUS(temper_model_free(stale), TEMPER_E_INVALID_HANDLE);
    EXPECT_STATUS(temper_model_logits((temper_model*)(uintptr_t)0x1234, ids, NULL, 1, 4, logits, 2048), TEMPER_E_INVALID_HANDLE);
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s demo|logits|greedy|adapter|train|misuse DIR [PROMPT]\n", argv[0]);
        return 2;
    }
    g_process_start = now_s();
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char* cmd = argv[1];
    const char* dir = argv[2];
    double t0 = now_s();
    (void)temper_version();   /* the first call into libtemper starts its runtime */
    double first_call_s = now_s() - t0;
    printf("c-host %s %s (libtemper %s, header %s)\n", cmd, dir, temper_version(), TEMPER_VERSION);
    if (strcmp(temper_version(), TEMPER_VERSION)) {   /* another ABI: nothing below may be called */
        fprintf(stderr, "FAIL: libtemper %s, but this host was compiled against temper.h %s\n", temper_version(), TEMPER_VERSION);
        return 1;
    }
    /* The option structs as this compiler lays them out are the sizes the library's defaults give. */
    EXPECT(temper_model_options_default().struct_size == sizeof(temper_model_options) &&
           temper_generate_options_default().struct_size == sizeof(temper_generate_options) &&
           temper_trainer_options_default().struct_size == sizeof(temper_trainer_options),
           "struct_size of the defaults %u/%u/%u, sizeof here %zu/%zu/%zu", temper_model_options_default().struct_size,
           temper_generate_options_default().struct_size, temper_trainer_options_default().struct_size,
           sizeof(temper_model_options), sizeof(temper_generate_options), sizeof(temper_trainer_options));
    int rc;
    if (!strcmp(cmd, "demo")) rc = run_demo(dir, argc > 3 ? argv[3] : "What is 2+2?", first_call_s);
    else if (!strcmp(cmd, "logits")) rc = run_logits(dir);
    else if (!strcmp(cmd, "greedy")) rc = run_greedy(dir);
    else if (!strcmp(cmd, "adapter")) rc = run_adapter(dir);
    else if (!strcmp(cmd, "train")) rc = run_train(dir);
    else if (!strcmp(cmd, "misuse")) rc = run_misuse(dir);
    else { fprintf(stderr, "unknown command %s\n", cmd); return 2; }
    expect_no_dotnet();
    if (rc == SKIP) return SKIP;
    if (rc || g_failures) {
        fprintf(stderr, "c-host %s: FAILED (%d failed checks)\n", cmd, g_failures + (rc != 0));
        return 1;
    }
    printf("c-host %s: passed\n", cmd);
    return 0;
}
