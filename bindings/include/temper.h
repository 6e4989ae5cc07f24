/*
 * temper.h - the C API of libtemper: load a Hugging Face model folder (config.json + safetensors +
 * tokenizer.json), tokenize, render its chat template, compute logits, generate with streaming
 * callbacks, load/apply/merge PEFT adapters (LoRA, DoRA, (IA)^3, prompt tuning, prefix tuning; LoRA with
 * modules_to_save copies of embed_tokens / lm_head), and fine-tune them with
 * SFT or DPO, from C or C++, with no .NET installed: libtemper is a self-contained NativeAOT library.
 *
 * Worked example (error handling shortened to one macro; samples/c-host/main.c is the full version):
 *
 *     #include "temper.h"
 *     #include <stdio.h>
 *     #include <stdlib.h>
 *
 *     #define CHECK(call) do { if ((call) < 0) { \
 *         fprintf(stderr, "%s failed: %s\n", #call, temper_last_error()); return 1; } } while (0)
 *
 *     static int print_piece(int32_t token, const char* piece, void* user) {
 *         (void)token; (void)user;
 *         fputs(piece, stdout);             // the text this token adds (UTF-8)
 *         return 0;                         // non-zero stops the generation
 *     }
 *
 *     int main(void) {
 *         temper_model* model = NULL;
 *         temper_model_options mo = temper_model_options_default();
 *         mo.threads = 4;
 *         CHECK(temper_model_load("models/SmolLM2-135M-Instruct", &mo, &model));
 *
 *         // Chat template -> prompt text -> token ids. Sizes are asked with a NULL buffer first.
 *         const char* messages = "[{\"role\": \"user\", \"content\": \"What is 2+2?\"}]";
 *         int32_t need = temper_model_chat_render(model, messages, 1, NULL, 0);
 *         CHECK(need);
 *         char* prompt = malloc(need);
 *         CHECK(temper_model_chat_render(model, messages, 1, prompt, need));
 *         int32_t n = temper_model_tokenize(model, prompt, NULL, 0);
 *         CHECK(n);
 *         int32_t* ids = malloc(n * sizeof(int32_t));
 *         CHECK(temper_model_tokenize(model, prompt, ids, n));
 *
 *         // Generate, streaming each piece of text as it is chosen.
 *         temper_generate_options go = temper_generate_options_default();
 *         go.max_new_tokens = 64;
 *         go.greedy = 0;
 *         go.temperature = 0.7f;
 *         go.top_p = 0.9f;
 *         go.presence_penalty = 0.5f;           // OpenAI's, over the tokens generated so far
 *         const char* stop[] = { "\n\n" };
 *         go.stop = stop;                       // end once the text holds a blank line
 *         go.stop_count = 1;
 *         temper_generate_result res;
 *         CHECK(temper_model_generate(model, ids, n, &go, print_piece, NULL, NULL, 0, &res));
 *
 *         // Fine-tune a LoRA adapter for a few steps, then save it in PEFT format.
 *         temper_trainer* trainer = NULL;
 *         temper_trainer_options to = temper_trainer_options_default();
 *         to.lora_rank = 8;
 *         to.batch_size = 4;
 *         CHECK(temper_trainer_init(model, &to, "data/sft.jsonl", &trainer));
 *         for (int step = 0; step < 20; step++) {
 *             float loss;
 *             CHECK(temper_trainer_step(trainer, &loss));
 *             printf("step %d loss %.4f\n", step + 1, loss);
 *         }
 *         CHECK(temper_trainer_save_adapter(trainer, "out/my-adapter"));
 *         temper_trainer_free(trainer);        // detaches the trained LoRA from the model
 *
 *         // Use the adapter: apply it unmerged (switchable), or merge it into the weights.
 *         temper_adapter* adapter = NULL;
 *         CHECK(temper_adapter_load("out/my-adapter", &adapter));
 *         CHECK(temper_adapter_apply(model, adapter));
 *         temper_adapter_free(adapter);        // the model keeps its own copy
 *         CHECK(temper_model_generate(model, ids, n, &go, print_piece, NULL, NULL, 0, &res));
 *
 *         free(ids); free(prompt);
 *         temper_model_free(model);
 *         return 0;
 *     }
 *
 * Conventions
 *  - Errors: every function that can fail returns a temper_status (0 = TEMPER_OK, negative = error) or
 *    a size (>= 0) that is negative on error. temper_last_error() then gives a message saying what
 *    went wrong. No C++ or .NET exception ever leaves the library.
 *  - Handles (temper_model, temper_adapter, temper_trainer) are opaque; each *_load / *_init has a
 *    *_free. Passing NULL, a freed handle or a handle of another kind gives TEMPER_E_INVALID_HANDLE
 *    (a freed handle's value may be reused by a later handle, which then cannot be told apart).
 *    *_free(NULL) is a no-op returning TEMPER_OK.
 *  - Strings are NUL-terminated UTF-8; input that is not valid UTF-8 gives TEMPER_E_INVALID_UTF8.
 *  - Output buffers: a function filling a caller buffer returns the size it needs (token count, or
 *    bytes including the terminating NUL) and writes the buffer only when capacity >= that size;
 *    call it with (NULL, 0) to ask, then again with a buffer that big.
 *  - Option structs are plain C structs passed by pointer (NULL = defaults). Each opens with
 *    uint32_t struct_size, which temper_*_options_default() sets to the struct's size as this header
 *    declares it: start from that value and change the fields you need (a struct made with {0} or
 *    memset has struct_size 0). The library reads struct_size first and refuses a size it does not
 *    know with TEMPER_E_INVALID_ARGUMENT and a message naming the struct, so a host compiled against
 *    another version's temper.h gets an error, never a read past its struct.
 *  - Versions and the ABI: TEMPER_VERSION is this header's version, temper_version() the library's.
 *    Within 0.x a minor version may break the ABI, so a host checks at start-up that the two are equal
 *    (the samples do). 0.2.0 broke 0.1.0's: struct_size was added and temper_sampling_options folded
 *    into temper_generate_options; hosts built against 0.1.0, whose structs have no size to check, must
 *    be rebuilt. From 0.2.0 on, fields are only added at the end of an option struct, so a later library
 *    can go on taking an older struct_size, reading the fields it lacks as their defaults: 0.3.0 added
 *    json_object and json_schema to temper_generate_options and still takes 0.2.0's size of it (a 0.2.0
 *    host runs unchanged on it, though its TEMPER_VERSION check sees "0.2.0" against "0.3.0"); 0.4.0 added
 *    use_dora, prompt_tuning_tokens, prefix_tuning_tokens, prompt_tuning_init_text and loraplus_lr_ratio to
 *    temper_trainer_options and still takes 0.3.0's size of it (88 bytes on LP64), those fields then
 *    0 / NULL / 1; 0.5.0 added min_new_tokens to temper_generate_options (0.3.0's and 0.4.0's size of it, 80
 *    bytes on LP64, still taken; 88 now) and ia3 and modules_to_save to temper_trainer_options (0.4.0's size of
 *    it, 112 bytes on LP64, still taken; 120 now), the missing fields then 0 / NULL.
 *    temper_generate_result and temper_step_metrics have no struct_size and do not
 *    change within 0.x.
 *  - Thread safety, stated per function below. In short: the library is thread-safe; one model runs
 *    one call at a time. Calls that run or change a model (logits, generate, adapter apply/remove/
 *    merge, every trainer call) do not wait: while one is running, another on the same model (from
 *    another thread, or from inside a callback of the first) returns TEMPER_E_BUSY at once.
 *    Tokenizer and template calls may run concurrently with anything but temper_model_free.
 *    Different models are independent.
 */
#ifndef TEMPER_H
#define TEMPER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define TEMPER_API __declspec(dllimport)
#else
#define TEMPER_API
#endif

/* The version of this header; temper_version() returns the library's. */
#define TEMPER_VERSION "0.5.0"

/* ---- status codes ------------------------------------------------------------------------------ */

typedef enum temper_status {
    TEMPER_OK = 0,
    TEMPER_E_INVALID_ARGUMENT = -1,  /* a NULL pointer, a negative count, a value out of range */
    TEMPER_E_INVALID_HANDLE = -2,    /* NULL, freed or wrong-kind handle */
    TEMPER_E_INVALID_UTF8 = -3,      /* a string argument is not valid UTF-8 */
    TEMPER_E_NOT_FOUND = -4,         /* a model/adapter folder or data file does not exist */
    TEMPER_E_IO = -5,                /* a file could not be read or written */
    TEMPER_E_INVALID_DATA = -6,      /* a model, adapter, template or data file (or a pushed example) is
                                        malformed or uses something Temper does not support; the message
                                        names the file and the problem */
    TEMPER_E_BUSY = -7,              /* the model is running another call (see thread safety) */
    TEMPER_E_UNSUPPORTED = -8,       /* not available in this build or not implemented yet */
    TEMPER_E_BUFFER_TOO_SMALL = -9,  /* a fixed-size output buffer is smaller than the result */
    TEMPER_E_OUT_OF_MEMORY = -10,
    TEMPER_E_INTERNAL = -100         /* a bug in Temper; the message says where */
} temper_status;

/* ---- library ----------------------------------------------------------------------------------- */

/* The library version, e.g. "0.5.0". Static storage. Thread-safe. */
TEMPER_API const char* temper_version(void);

/* The message of the last call on this thread that failed, or "" if it succeeded (the calls that
   cannot fail, temper_version, temper_status_name and the *_default functions, leave it as it is).
   Valid until the next temper call on this thread. Thread-safe (each thread has its own). */
TEMPER_API const char* temper_last_error(void);

/* The name of a status code, e.g. "TEMPER_E_BUSY". Static storage. Thread-safe. */
TEMPER_API const char* temper_status_name(int32_t status);

/* ---- models ------------------------------------------------------------------------------------ */

typedef struct temper_model temper_model;

typedef enum temper_device {
    TEMPER_DEVICE_CPU = 0,
    TEMPER_DEVICE_CUDA = 1   /* generation on an NVIDIA GPU (sm_80+) through Temper's CUDA kernels, one captured
                                CUDA graph a token (no ILGPU); weights held as bf16. Logits, adapters and training
                                use the CPU copy; generating with an unmerged adapter is TEMPER_E_UNSUPPORTED
                                (merge it first). Head dims 64 and 128 only. No driver or device, or another head
                                dim: TEMPER_E_UNSUPPORTED from temper_model_load. */
} temper_device;

typedef struct temper_model_options {
    uint32_t struct_size;  /* sizeof(temper_model_options); set by temper_model_options_default() */
    int32_t device;        /* temper_device; default TEMPER_DEVICE_CPU */
    int32_t threads;       /* CPU worker threads; 0 (default) = every core */
} temper_model_options;

/* Default model options. Thread-safe. */
TEMPER_API temper_model_options temper_model_options_default(void);

/* Loads a model folder (config.json, *.safetensors, and tokenizer.json / chat template when present)
   into *model. options may be NULL. A mixture-of-experts model (Mixtral, Qwen3-MoE, Qwen2-MoE) loads on
   TEMPER_DEVICE_CPU for logits and generation (TEMPER_DEVICE_CUDA: TEMPER_E_UNSUPPORTED). Errors: TEMPER_E_NOT_FOUND
   (no folder, no config.json), TEMPER_E_INVALID_DATA (bad config or weights), TEMPER_E_UNSUPPORTED (device). Thread-safe. */
TEMPER_API temper_status temper_model_load(const char* dir, const temper_model_options* options, temper_model** model);

/* Frees a model. Fails with TEMPER_E_BUSY while a call is running on it or a trainer is attached
   (free the trainer first). Must not race with other calls on the same model. */
TEMPER_API temper_status temper_model_free(temper_model* model);

/* The width of a logits row (config.json's vocab_size); token ids lie in [0, vocab_size).
   Negative on error. Thread-safe. */
TEMPER_API int32_t temper_model_vocab_size(const temper_model* model);

/* Token ids of text (no BOS/EOS added; special tokens written in the text become their ids).
   Returns the number of ids; writes ids only when capacity >= that. Negative on error
   (TEMPER_E_INVALID_DATA if the folder has no tokenizer.json). Thread-safe, concurrent calls allowed. */
TEMPER_API int32_t temper_model_tokenize(const temper_model* model, const char* text, int32_t* ids, int32_t capacity);

/* Text of count ids (special tokens dropped when skip_special != 0). Returns the bytes needed
   including the NUL; writes text only when capacity >= that. Negative on error.
   Thread-safe, concurrent calls allowed. */
TEMPER_API int32_t temper_model_detokenize(const temper_model* model, const int32_t* ids, int32_t count,
                                           int32_t skip_special, char* text, int32_t capacity);

/* Renders the model's chat template for messages_json, a JSON array of {"role": ..., "content": ...}
   objects (UTF-8), as transformers' apply_chat_template(tokenize=False) does; add_generation_prompt
   != 0 appends the assistant turn's opening. Returns the bytes needed including the NUL; writes
   text only when capacity >= that. Negative on error (TEMPER_E_INVALID_ARGUMENT for bad JSON,
   TEMPER_E_INVALID_DATA for no template or a template error). Thread-safe, concurrent calls allowed. */
TEMPER_API int32_t temper_model_chat_render(const temper_model* model, const char* messages_json,
                                            int32_t add_generation_prompt, char* text, int32_t capacity);

/* As temper_model_chat_render, with template variables: template_kwargs_json (UTF-8; NULL = none) is a
   JSON object whose entries the template sees beside the messages, as transformers' apply_chat_template
   passes its extra keyword arguments, e.g. {"enable_thinking": false} for Qwen3.
   TEMPER_E_INVALID_ARGUMENT when it is not a JSON object. Thread-safe, concurrent calls allowed. */
TEMPER_API int32_t temper_model_chat_render_vars(const temper_model* model, const char* messages_json,
                                                 int32_t add_generation_prompt, const char* template_kwargs_json,
                                                 char* text, int32_t capacity);

/* Logits for ids [batch, seq] (row-major), with an optional 0/1 attention mask [batch, seq] (NULL =
   all ones; padded positions get logits too, which are not meaningful), into logits
   [batch, seq, vocab_size] (capacity in floats; TEMPER_E_BUFFER_TOO_SMALL if fewer).
   Runs the model: TEMPER_E_BUSY while another running call holds it. */
TEMPER_API temper_status temper_model_logits(temper_model* model, const int32_t* ids, const int32_t* mask,
                                             int32_t batch, int32_t seq, float* logits, size_t capacity);

/* ---- generation -------------------------------------------------------------------------------- */

/* Sampling follows Hugging Face's order: repetition penalty (over prompt and output), then OpenAI's
   frequency and presence penalties (over the generated tokens only: logit -= frequency_penalty x count
   + presence_penalty x [count > 0], as vLLM applies them), then temperature, top-k, top-p, min-p and a
   draw (or argmax when greedy; the three penalties apply to greedy decoding too). */
typedef struct temper_generate_options {
    uint32_t struct_size;       /* sizeof(temper_generate_options); set by temper_generate_options_default() */
    int32_t max_new_tokens;     /* default 64 */
    int32_t ignore_eos;         /* non-zero: keep going past EOS; default 0 */
    int32_t greedy;             /* non-zero (default): argmax; temperature, top_k, top_p, min_p and seed are
                                   then ignored */
    float temperature;          /* > 0; default 1 */
    int32_t top_k;              /* 0 (default) = off */
    float top_p;                /* (0, 1]; 1 (default) = off */
    float min_p;                /* [0, 1]; 0 (default) = off */
    float repetition_penalty;   /* > 0; 1 (default) = off */
    float frequency_penalty;    /* [-2, 2]; 0 (default) = off */
    float presence_penalty;     /* [-2, 2]; 0 (default) = off */
    uint64_t seed;              /* default 0 */
    const char* const* stop;    /* stop_count NUL-terminated UTF-8 strings, none empty; NULL (default) = none.
                                   Generation ends (TEMPER_FINISH_STOP_STRING) after the token with which the
                                   generated text (special tokens skipped) first contains one of them; that
                                   token is streamed and output, so the text holds the stop string (it is
                                   not cut off). Needs the model's tokenizer.json. Read during the call only. */
    int32_t stop_count;         /* >= 0; default 0 */
    int32_t json_object;        /* since 0.3.0. Non-zero: the output is one JSON object, each token constrained
                                   so the text stays valid JSON, EOS only once the object is complete (as
                                   `temper generate --json` and the server's response_format json_object);
                                   needs tokenizer.json and ignore_eos = 0. Default 0 */
    const char* json_schema;    /* since 0.3.0. NUL-terminated UTF-8 JSON Schema: the output is JSON matching it
                                   (the subset `temper generate --json-schema` takes; another keyword is
                                   TEMPER_E_INVALID_ARGUMENT naming it; compiled once per distinct schema on
                                   the model). Not with json_object. NULL (default) = none. Read during the
                                   call only. A host built against 0.2.0's header (its smaller struct_size)
                                   is still accepted, without these two fields. */
    int32_t min_new_tokens;     /* since 0.5.0. transformers' min_new_tokens (`temper generate --min-new-tokens`):
                                   before this many new tokens EOS cannot be picked (its logits are masked) and
                                   stop strings do not end the generation. >= 0 (a negative value is
                                   TEMPER_E_INVALID_ARGUMENT naming it); 0 (default) = off. > 0 on
                                   TEMPER_DEVICE_CUDA is TEMPER_E_UNSUPPORTED. A host built against 0.3.0's or
                                   0.4.0's header (their smaller struct_size) is still accepted, without it. */
} temper_generate_options;

typedef enum temper_finish_reason {
    TEMPER_FINISH_LENGTH = 0,   /* max_new_tokens reached */
    TEMPER_FINISH_EOS = 1,      /* an EOS token was generated (it is included in the output) */
    TEMPER_FINISH_STOPPED = 2,  /* the token callback returned non-zero */
    TEMPER_FINISH_STOP_STRING = 3 /* the generated text contains one of options->stop */
} temper_finish_reason;

typedef struct temper_generate_result {
    int32_t generated;          /* tokens generated (may exceed out_capacity: only that many were written) */
    int32_t finish;             /* temper_finish_reason */
} temper_generate_result;

/* Called for each generated token with the text it adds (NUL-terminated UTF-8, "" for special tokens
   or while a multi-byte character is incomplete; valid during the call). Return non-zero to stop. */
typedef int (*temper_token_callback)(int32_t token, const char* piece, void* user);

/* Default generation options (greedy, 64 new tokens, no penalties, no stop strings). Thread-safe. */
TEMPER_API temper_generate_options temper_generate_options_default(void);

/* Continues prompt (count ids) with the model (and its applied adapter). on_token may be NULL;
   out_ids (may be NULL with out_capacity 0) receives up to out_capacity generated ids; result may be
   NULL. Stops at EOS (config.json's and the tokenizer's), at max_new_tokens, at a stop string, or when
   on_token returns non-zero. A field out of range, a NULL or empty stop string is TEMPER_E_INVALID_ARGUMENT
   (a stop string that is not UTF-8, TEMPER_E_INVALID_UTF8); stop strings without a tokenizer.json are
   TEMPER_E_INVALID_DATA, and on TEMPER_DEVICE_CUDA TEMPER_E_UNSUPPORTED (end it from on_token there).
   Runs the model: TEMPER_E_BUSY while another running call holds it; on_token must not
   call functions that run this model (they return TEMPER_E_BUSY). */
TEMPER_API temper_status temper_model_generate(temper_model* model, const int32_t* prompt, int32_t count,
                                               const temper_generate_options* options,
                                               temper_token_callback on_token, void* user,
                                               int32_t* out_ids, int32_t out_capacity,
                                               temper_generate_result* result);

/* ---- adapters ---------------------------------------------------------------------------------- */

typedef struct temper_adapter temper_adapter;

/* What each kind of PEFT adapter folder supports (peft_type in adapter_config.json):
     LORA               apply (unmerged, y = xW^T + s(xA^T)B^T), remove, merge (W += s B A)
     LORA, use_dora     (DoRA, since 0.4.0) apply (unmerged: y = m / ||W + s B A||_row * (xW^T + s(xA^T)B^T)),
                        remove, merge (W' = m / ||W + s B A||_row * (W + s B A), as PEFT merges it)
     PROMPT_TUNING      (since 0.4.0) apply (its num_virtual_tokens embeddings go before every sequence), remove;
                        merge is TEMPER_E_INVALID_ARGUMENT (there are no weights to fold them into)
     PREFIX_TUNING      (since 0.4.0) apply (every layer's attention sees its key/value rows before the real
                        tokens), remove; merge is TEMPER_E_INVALID_ARGUMENT
     IA3                (since 0.5.0) apply (unmerged: y = (xW^T + b) * l, or (x * l)W^T + b for a feedforward module),
                        remove, merge (rows or columns of W scaled by l, as PEFT merges it)
     LORA, modules_to_save (since 0.5.0) full copies of embed_tokens and/or lm_head beside the LoRA (PEFT
                        modules_to_save): apply puts them in place of those weights until remove (or the next apply)
                        takes them off again; merge puts them in place for good (a later adapter with a copy of the
                        same module is then TEMPER_E_INVALID_DATA). A resized vocabulary is refused.
   An unmerged adapter of any kind cannot be generated with on TEMPER_DEVICE_CUDA (TEMPER_E_UNSUPPORTED). */

/* Reads a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) of a kind listed above.
   Other peft_types and PEFT options Temper does not implement (per-module dropout, ...) are refused with
   TEMPER_E_INVALID_DATA. A prompt or prefix folder's shapes are checked against the model when applied.
   Thread-safe. */
TEMPER_API temper_status temper_adapter_load(const char* dir, temper_adapter** adapter);

/* Frees an adapter (models it was applied to keep their own copy). Must not race with calls using it. */
TEMPER_API temper_status temper_adapter_free(temper_adapter* adapter);

/* Attaches the adapter to the model unmerged (LoRA views, or a prompt's / prefix's virtual tokens), replacing
   any adapter applied before. Fails if its modules or shapes do not fit the model (TEMPER_E_INVALID_DATA; the
   model is then left without adapter). Changes the model: TEMPER_E_BUSY while another running call or a
   trainer holds it. */
TEMPER_API temper_status temper_adapter_apply(temper_model* model, const temper_adapter* adapter);

/* Detaches the applied adapter (no-op without one). TEMPER_E_BUSY as for temper_adapter_apply. */
TEMPER_API temper_status temper_adapter_remove(temper_model* model);

/* Merges a LoRA, DoRA or IA3 adapter into the model's weights (W += s B A; cannot be undone without reloading).
   Any applied unmerged adapter is detached first. A prompt- or prefix-tuning adapter is TEMPER_E_INVALID_ARGUMENT
   (the model is left as it was). TEMPER_E_BUSY as for temper_adapter_apply. */
TEMPER_API temper_status temper_adapter_merge(temper_model* model, const temper_adapter* adapter);

/* ---- training ---------------------------------------------------------------------------------- */

typedef struct temper_trainer temper_trainer;

typedef enum temper_train_method {
    TEMPER_TRAIN_SFT = 0,       /* supervised fine-tuning of an adapter (LoRA, DoRA, IA3, prompt or prefix tuning) */
    TEMPER_TRAIN_DPO = 1        /* DPO (sigmoid loss at dpo_beta) of an adapter on preference pairs; the
                                   reference is the model with the trained adapter off (LoRA views, and a
                                   prompt's or prefix's virtual tokens): the base, or the base with an SFT
                                   adapter merged in (temper_adapter_merge) beforehand */
} temper_train_method;

typedef enum temper_lr_schedule {
    TEMPER_LR_CONSTANT = 0,
    TEMPER_LR_LINEAR = 1,       /* linear decay to 0 at total_steps (default) */
    TEMPER_LR_COSINE = 2
} temper_lr_schedule;

typedef struct temper_trainer_options {
    uint32_t struct_size;       /* sizeof(temper_trainer_options); set by temper_trainer_options_default() */
    int32_t method;             /* temper_train_method; default TEMPER_TRAIN_SFT */
    const char* init_adapter;   /* a PEFT folder to go on training, as it is: LoRA (its rank, alpha and targets
                                   are used, not the three fields below; its modules_to_save copies go on being
                                   trained), DoRA (goes on as DoRA), IA3 (goes on as IA3, its targets used),
                                   prompt or prefix tuning (goes on as that; the token count field, if set, must match);
                                   NULL (default) = a fresh adapter. Read during temper_trainer_init only. */
    int32_t lora_rank;          /* default 16 */
    float lora_alpha;           /* default 32 (scale = alpha / rank) */
    int32_t use_rslora;         /* non-zero: scale = alpha / sqrt(rank); default 0 */
    const char* lora_targets;   /* comma-separated module names ("q_proj,v_proj"); NULL (default) =
                                   q,k,v,o,gate,up,down projections. Read during temper_trainer_init only. */
    float learning_rate;        /* peak learning rate; default 2e-4 */
    int32_t scheduler;          /* temper_lr_schedule; default TEMPER_LR_LINEAR */
    int32_t warmup_steps;       /* linear warm-up from 0; default 0 */
    int32_t total_steps;        /* the schedule's length; 0 (default) = constant after warm-up */
    float weight_decay;         /* AdamW decoupled weight decay; default 0 */
    float max_grad_norm;        /* global gradient-norm clip; 0 = off; default 1 */
    int32_t batch_size;         /* examples per micro-batch; default 8 */
    int32_t grad_accum;         /* micro-batches per step; default 1 */
    int32_t max_length;         /* longer examples are cut to this many tokens; default 1024 */
    int32_t seed;               /* LoRA init and data order; default 42 */
    float dpo_beta;             /* DPO only; default 0.1 */
    int32_t use_dora;           /* since 0.4.0. Non-zero: train a DoRA adapter (PEFT use_dora): each module
                                   also learns a magnitude m [Out], starting at its weight's row norms, and is
                                   saved with lora_magnitude_vector. With init_adapter it must be a DoRA folder
                                   (one is continued as DoRA without this). Default 0 */
    int32_t prompt_tuning_tokens; /* since 0.4.0. > 0: train P virtual token embeddings [P, hidden] put before
                                   every sequence (PEFT PROMPT_TUNING) instead of a LoRA, initialised RANDOM
                                   (N(0,1), seeded) or from prompt_tuning_init_text. Default 0 = off */
    int32_t prefix_tuning_tokens; /* since 0.4.0. > 0: train P key/value rows per layer that every query attends
                                   to before the real tokens (PEFT PREFIX_TUNING, no projection; N(0,1), seeded)
                                   instead of a LoRA. Default 0 = off. Prompt and prefix tuning train only their
                                   virtual tokens: both at once, or either with use_dora, use_rslora or
                                   lora_targets, is TEMPER_E_INVALID_ARGUMENT naming the field (lora_rank and
                                   lora_alpha are ignored) */
    const char* prompt_tuning_init_text; /* since 0.4.0. Prompt tuning's TEXT init: the embeddings of this text's
                                   tokens, repeated or cut to prompt_tuning_tokens (PEFT prompt_tuning_init TEXT).
                                   Only with prompt_tuning_tokens > 0 and no init_adapter; not empty.
                                   NULL (default) = RANDOM. Read during temper_trainer_init only.
                                   A host built against 0.3.0's header (its smaller struct_size) is still
                                   accepted, without these five fields. */
    float loraplus_lr_ratio;    /* since 0.4.0. LoRA+ (PEFT's create_loraplus_optimizer): lora_B and DoRA's
                                   magnitudes learn at learning_rate times this, lora_A at learning_rate.
                                   Default 1 = off; must be > 0; only 1 with prompt or prefix tuning */
    int32_t ia3;                /* since 0.5.0. Non-zero: train a PEFT (IA)^3 adapter instead of a LoRA (as `temper sft
                                   --ia3`): one scaling vector l per targeted projection, ones at the start, with
                                   PEFT's default targets for llama / qwen2 / mistral (k_proj, v_proj, down_proj;
                                   down_proj feedforward, scaling its input). lora_rank and lora_alpha are ignored;
                                   with use_dora, use_rslora, lora_targets, loraplus_lr_ratio != 1, modules_to_save,
                                   prompt_tuning_tokens, prefix_tuning_tokens or prompt_tuning_init_text it is
                                   TEMPER_E_INVALID_ARGUMENT naming that field. With init_adapter it must be an IA3
                                   folder (one is continued as IA3 without this). Default 0 */
    const char* modules_to_save; /* since 0.5.0. Comma-separated "embed_tokens" and/or "lm_head": full f32 copies of
                                   those weights trained beside the LoRA or DoRA and saved with it (PEFT
                                   modules_to_save, as `temper sft --modules-to-save`); another name, or lm_head also
                                   in lora_targets, is TEMPER_E_INVALID_ARGUMENT; not with ia3, prompt or prefix
                                   tuning. With init_adapter it must name the folder's own copies (which are trained
                                   on without it). NULL (default) = none. Read during temper_trainer_init only.
                                   A host built against 0.4.0's header (its smaller struct_size) is still accepted,
                                   without these two fields. */
} temper_trainer_options;

typedef struct temper_step_metrics {
    int32_t step;               /* 1-based optimizer step */
    float loss;                 /* SFT: mean token cross-entropy of the step; DPO: mean DPO loss over pairs; a
                                   mixture-of-experts model with output_router_logits adds router_aux_loss_coef x
                                   its router load-balancing loss, as temper sft / dpo do */
    float grad_norm;            /* global gradient norm before clipping */
    float learning_rate;        /* the learning rate the step used */
    float tokens_per_second;
    int32_t tokens;             /* tokens (padding included) in the step's batches */
    int32_t skipped;            /* non-zero: loss or gradient not finite, the update was skipped */
    float reward_margin;        /* DPO: mean beta (log-ratio chosen - log-ratio rejected); SFT: 0 */
    float reward_accuracy;      /* DPO: fraction of pairs whose chosen reward is the larger; SFT: 0 */
} temper_step_metrics;

/* Called at the end of each step (on the thread running temper_trainer_step). */
typedef void (*temper_metrics_callback)(const temper_step_metrics* metrics, void* user);

/* Default trainer options. Thread-safe. */
TEMPER_API temper_trainer_options temper_trainer_options_default(void);

/* Creates a trainer on the model: a fresh adapter (LoRA or DoRA views with PEFT initialisation, so the model
   is unchanged until the first step; or a prompt's or prefix's virtual tokens, which change it from the start),
   or options->init_adapter's, is attached and the model computes with it while the trainer lives, so
   temper_model_generate samples the adapter being trained (on TEMPER_DEVICE_CPU). data_path (may be NULL) is a JSONL file of
   TRL examples: for SFT {"messages": [...]}, {"prompt": ..., "completion": ...} or {"text": ...}; for
   DPO {"prompt": ..., "chosen": ..., "rejected": ...} (text or messages; pairs longer than max_length
   are dropped); more can be pushed with temper_trainer_push. options may be NULL. Fails with
   TEMPER_E_BUSY if an adapter is applied (remove or merge it first) or the model has a trainer
   already, TEMPER_E_UNSUPPORTED in a build without training. Takes the model like a running call. */
TEMPER_API temper_status temper_trainer_init(temper_model* model, const temper_trainer_options* options,
                                             const char* data_path, temper_trainer** trainer);

/* Frees the trainer and detaches its adapter from the model (save it first to keep it).
   Takes the model: TEMPER_E_BUSY while another call holds it. */
TEMPER_API temper_status temper_trainer_free(temper_trainer* trainer);

/* Adds one example, one JSON line in a form the data file takes. It joins the shuffled order from the
   next epoch on. TEMPER_E_INVALID_DATA names what is wrong with it. Takes the model. */
TEMPER_API temper_status temper_trainer_push(temper_trainer* trainer, const char* json_line);

/* Runs one optimizer step (grad_accum micro-batches of batch_size examples or pairs, clipping, AdamW) and stores its loss in *loss
   (may be NULL). Takes the model: a generate or logits call on the model meanwhile gets TEMPER_E_BUSY. */
TEMPER_API temper_status temper_trainer_step(temper_trainer* trainer, float* loss);

/* Sets (or clears, with NULL) the callback called after each step. Takes the model. */
TEMPER_API temper_status temper_trainer_set_metrics_callback(temper_trainer* trainer,
                                                             temper_metrics_callback callback, void* user);

/* Writes the trained adapter as a PEFT folder (adapter_config.json + adapter_model.safetensors) that
   temper_adapter_load, PEFT and transformers read: peft_type LORA (use_dora true with lora_magnitude_vector
   for DoRA; modules_to_save with the copies' weights), IA3, PROMPT_TUNING or PREFIX_TUNING. Takes the model. */
TEMPER_API temper_status temper_trainer_save_adapter(temper_trainer* trainer, const char* dir);

#ifdef __cplusplus
}
#endif

#endif /* TEMPER_H */
