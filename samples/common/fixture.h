/*
 * fixture.h - just enough JSON and safetensors reading for the sample hosts to check libtemper against
 * the reference files in ../shared/fixtures/hf/<model>/ (reference.json, reference.safetensors), so
 * every expected number comes from the fixture files at test time.
 *
 *     fx_json* j = fx_json_load("reference.json", err, sizeof err);
 *     const fx_json* ids = fx_json_path(j, "greedy.output_ids");    // array of numbers
 *     fx_tensor t;
 *     fx_safetensors_read("reference.safetensors", "logits", &t, err, sizeof err);  // t.data: F32 [2,24,512]
 */
#ifndef TEMPER_SAMPLES_FIXTURE_H
#define TEMPER_SAMPLES_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fx_json_type { FX_NULL, FX_BOOL, FX_NUMBER, FX_STRING, FX_ARRAY, FX_OBJECT } fx_json_type;

typedef struct fx_json {
    fx_json_type type;
    double number;              /* FX_NUMBER, FX_BOOL (0/1) */
    char* string;               /* FX_STRING: decoded UTF-8, NUL-terminated */
    size_t length;              /* FX_STRING: bytes; FX_ARRAY/FX_OBJECT: element count */
    struct fx_json* items;      /* FX_ARRAY elements, FX_OBJECT values */
    char** keys;                /* FX_OBJECT keys */
    const char* raw;            /* the value's JSON text in the source (not NUL-terminated) */
    size_t raw_length;
    char* source;               /* the root owns the file text */
} fx_json;

/* Parses a JSON file; NULL on error with a message in err. */
fx_json* fx_json_load(const char* path, char* err, size_t err_size);
/* Parses JSON text (kept by reference for raw; must outlive the tree). NULL on error. */
fx_json* fx_json_parse(const char* text, char* err, size_t err_size);
void fx_json_free(fx_json* root);
/* Member of an object, or NULL. */
const fx_json* fx_json_get(const fx_json* object, const char* key);
/* Dotted path of object members ("greedy.prompt_ids"), or NULL. */
const fx_json* fx_json_path(const fx_json* root, const char* path);
/* A copy of the value's JSON text (malloc'd, NUL-terminated). */
char* fx_json_raw(const fx_json* value);
/* A numeric array as int32 (malloc'd; count in *count); NULL if not an array of numbers. */
int32_t* fx_json_int_array(const fx_json* array, int32_t* count);

typedef struct fx_tensor {
    char dtype[16];             /* "F32", "I32", ... */
    int64_t shape[8];
    int rank;
    int64_t elements;
    void* data;                 /* malloc'd copy, little-endian as stored */
} fx_tensor;

/* Reads one tensor of a .safetensors file; 0 on success, -1 with a message in err. */
int fx_safetensors_read(const char* path, const char* name, fx_tensor* out, char* err, size_t err_size);
void fx_tensor_free(fx_tensor* t);

/* Reads a whole file (malloc'd, NUL-terminated); NULL on error. */
char* fx_read_file(const char* path, size_t* size);

#ifdef __cplusplus
}
#endif

#endif
