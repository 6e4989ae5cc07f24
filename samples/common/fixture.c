/*
 * fixture.c - a small recursive-descent JSON parser (RFC 8259: objects, arrays, strings with every
 * escape including surrogate pairs, numbers, true/false/null) and a safetensors tensor reader
 * (8-byte little-endian header length, JSON header, raw data), for the sample hosts' checks.
 */
#include "fixture.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    const char* p;
    const char* end;
    char* err;
    size_t err_size;
    int failed;
} parser;

static void fail(parser* ps, const char* fmt, ...) {
    if (ps->failed) return;
    ps->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    if (ps->err && ps->err_size) vsnprintf(ps->err, ps->err_size, fmt, ap);
    va_end(ap);
}

static void skip_ws(parser* ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static void* xrealloc(void* p, size_t n) {
    void* q = realloc(p, n ? n : 1);
    if (!q) { fprintf(stderr, "fixture: out of memory\n"); abort(); }
    return q;
}

static int hex4(parser* ps, unsigned* out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        if (ps->p >= ps->end) { fail(ps, "unterminated \\u escape"); return -1; }
        char c = *ps->p++;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else { fail(ps, "bad \\u escape"); return -1; }
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char* dst, unsigned cp) {
    if (cp < 0x80) { dst[0] = (char)cp; return 1; }
    if (cp < 0x800) { dst[0] = (char)(0xC0 | (cp >> 6)); dst[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        dst[0] = (char)(0xE0 | (cp >> 12)); dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); dst[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    dst[0] = (char)(0xF0 | (cp >> 18)); dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); dst[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses a string at ps->p (the opening quote); the decoded text is never longer than the source. */
static char* parse_string(parser* ps, size_t* length) {
    ps->p++;
    const char* start = ps->p;
    char* out = (char*)xrealloc(NULL, (size_t)(ps->end - start) + 1);
    size_t n = 0;
    while (1) {
        if (ps->p >= ps->end) { fail(ps, "unterminated string"); free(out); return NULL; }
        char c = *ps->p++;
        if (c == '"') break;
        if ((unsigned char)c < 0x20) { fail(ps, "control character in string"); free(out); return NULL; }
        if (c != '\\') { out[n++] = c; continue; }
        if (ps->p >= ps->end) { fail(ps, "unterminated escape"); free(out); return NULL; }
        char e = *ps->p++;
        switch (e) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(ps, &cp)) { free(out); return NULL; }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u') { fail(ps, "lone high surrogate"); free(out); return NULL; }
                ps->p += 2;
                if (hex4(ps, &lo)) { free(out); return NULL; }
                if (lo < 0xDC00 || lo > 0xDFFF) { fail(ps, "bad low surrogate"); free(out); return NULL; }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail(ps, "lone low surrogate"); free(out); return NULL;
            }
            n += put_utf8(out + n, cp);
            break;
        }
        default: fail(ps, "bad escape \\%c", e); free(out); return NULL;
        }
    }
    out[n] = 0;
    *length = n;
    return out;
}

static void free_value(fx_json* v) {
    if (v->type == FX_STRING) free(v->string);
    if (v->type == FX_ARRAY || v->type == FX_OBJECT) {
        for (size_t i = 0; i < v->length; i++) {
            free_value(&v->items[i]);
            if (v->keys) free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
    }
}

static int parse_value(parser* ps, fx_json* v, int depth) {
    memset(v, 0, sizeof *v);
    skip_ws(ps);
    if (depth > 200) { fail(ps, "nesting too deep"); return -1; }
    if (ps->p >= ps->end) { fail(ps, "unexpected end of input"); return -1; }
    const char* begin = ps->p;
    char c = *ps->p;
    if (c == '{' || c == '[') {
        int object = c == '{';
        v->type = object ? FX_OBJECT : FX_ARRAY;
        ps->p++;
        size_t cap = 0;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) { ps->p++; goto done; }
        while (1) {
            if (v->length == cap) {
                cap = cap ? cap * 2 : 8;
                v->items = (fx_json*)xrealloc(v->items, cap * sizeof *v->items);
                if (object) v->keys = (char**)xrealloc(v->keys, cap * sizeof *v->keys);
            }
            if (object) {
                skip_ws(ps);
                if (ps->p >= ps->end || *ps->p != '"') { fail(ps, "expected a key"); return -1; }
                size_t kl;
                char* key = parse_string(ps, &kl);
                if (!key) return -1;
                v->keys[v->length] = key;
                skip_ws(ps);
                if (ps->p >= ps->end || *ps->p != ':') { v->length++; v->items[v->length - 1].type = FX_NULL; fail(ps, "expected ':'"); return -1; }
                ps->p++;
            }
            int rc = parse_value(ps, &v->items[v->length], depth + 1);
            v->length++;
            if (rc) return -1;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
            if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) { ps->p++; break; }
            fail(ps, "expected ',' or '%c'", object ? '}' : ']');
            return -1;
        }
    } else if (c == '"') {
        v->type = FX_STRING;
        v->string = parse_string(ps, &v->length);
        if (!v->string) return -1;
    } else if (c == 't' && ps->end - ps->p >= 4 && !memcmp(ps->p, "true", 4)) {
        v->type = FX_BOOL; v->number = 1; ps->p += 4;
    } else if (c == 'f' && ps->end - ps->p >= 5 && !memcmp(ps->p, "false", 5)) {
        v->type = FX_BOOL; ps->p += 5;
    } else if (c == 'n' && ps->end - ps->p >= 4 && !memcmp(ps->p, "null", 4)) {
        v->type = FX_NULL; ps->p += 4;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        char buf[64];
        size_t n = 0;
        while (ps->p < ps->end && n < sizeof buf - 1 && strchr("+-0123456789.eE", *ps->p)) buf[n++] = *ps->p++;
        buf[n] = 0;
        char* endp;
        v->type = FX_NUMBER;
        v->number = strtod(buf, &endp);
        if (*endp) { fail(ps, "bad number '%s'", buf); return -1; }
    } else {
        fail(ps, "unexpected character '%c'", c);
        return -1;
    }
done:
    v->raw = begin;
    v->raw_length = (size_t)(ps->p - begin);
    return 0;
}

fx_json* fx_json_parse(const char* text, char* err, size_t err_size) {
    parser ps = { text, text + strlen(text), err, err_size, 0 };
    fx_json* root = (fx_json*)xrealloc(NULL, sizeof *root);
    int rc = parse_value(&ps, root, 0);
    skip_ws(&ps);
    if (!rc && ps.p != ps.end) { fail(&ps, "trailing characters after the JSON value"); rc = -1; }
    if (rc) { free_value(root); free(root); return NULL; }
    root->source = NULL;
    return root;
}

char* fx_read_file(const char* path, size_t* size) {
    FILE* f = fopen(path, "rb");
    if (!f) return NULL;
    char* data = NULL;
    size_t n = 0, cap = 0;
    while (1) {
        if (cap - n < 65536) { cap = cap ? cap * 2 : 1 << 20; data = (char*)xrealloc(data, cap + 1); }
        size_t got = fread(data + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    data[n] = 0;
    if (size) *size = n;
    return data;
}

fx_json* fx_json_load(const char* path, char* err, size_t err_size) {
    char* text = fx_read_file(path, NULL);
    if (!text) { snprintf(err, err_size, "%s: cannot read", path); return NULL; }
    char inner[256];
    fx_json* root = fx_json_parse(text, inner, sizeof inner);
    if (!root) { snprintf(err, err_size, "%s: %s", path, inner); free(text); return NULL; }
    root->source = text;
    return root;
}

void fx_json_free(fx_json* root) {
    if (!root) return;
    free_value(root);
    free(root->source);
    free(root);
}

const fx_json* fx_json_get(const fx_json* object, const char* key) {
    if (!object || object->type != FX_OBJECT) return NULL;
    for (size_t i = 0; i < object->length; i++)
        if (!strcmp(object->keys[i], key)) return &object->items[i];
    return NULL;
}

const fx_json* fx_json_path(const fx_json* root, const char* path) {
    char part[128];
    const fx_json* v = root;
    while (v && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof part) return NULL;
        memcpy(part, path, n);
        part[n] = 0;
        v = fx_json_get(v, part);
        path += n;
        if (*path == '.') path++;
    }
    return v;
}

char* fx_json_raw(const fx_json* value) {
    char* s = (char*)xrealloc(NULL, value->raw_length + 1);
    memcpy(s, value->raw, value->raw_length);
    s[value->raw_length] = 0;
    return s;
}

int32_t* fx_json_int_array(const fx_json* array, int32_t* count) {
    if (!array || array->type != FX_ARRAY) return NULL;
    int32_t* a = (int32_t*)xrealloc(NULL, array->length * sizeof(int32_t));
    for (size_t i = 0; i < array->length; i++) {
        if (array->items[i].type != FX_NUMBER) { free(a); return NULL; }
        a[i] = (int32_t)array->items[i].number;
    }
    *count = (int32_t)array->length;
    return a;
}

int fx_safetensors_read(const char* path, const char* name, fx_tensor* out, char* err, size_t err_size) {
    memset(out, 0, sizeof *out);
    FILE* f = fopen(path, "rb");
    if (!f) { snprintf(err, err_size, "%s: cannot open", path); return -1; }
    unsigned char len8[8];
    if (fread(len8, 1, 8, f) != 8) { snprintf(err, err_size, "%s: too short", path); fclose(f); return -1; }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | len8[i];
    if (hlen > (100u << 20)) { snprintf(err, err_size, "%s: header of %llu bytes", path, (unsigned long long)hlen); fclose(f); return -1; }
    char* header = (char*)xrealloc(NULL, (size_t)hlen + 1);
    if (fread(header, 1, (size_t)hlen, f) != hlen) { snprintf(err, err_size, "%s: truncated header", path); free(header); fclose(f); return -1; }
    header[hlen] = 0;
    char inner[256];
    fx_json* h = fx_json_parse(header, inner, sizeof inner);
    if (!h) { snprintf(err, err_size, "%s: header: %s", path, inner); free(header); fclose(f); return -1; }
    const fx_json* e = fx_json_get(h, name);
    const fx_json* dtype = fx_json_get(e, "dtype");
    const fx_json* shape = fx_json_get(e, "shape");
    const fx_json* offsets = fx_json_get(e, "data_offsets");
    int rc = -1;
    if (!e || !dtype || dtype->type != FX_STRING || !shape || shape->type != FX_ARRAY || shape->length > 8 ||
        !offsets || offsets->type != FX_ARRAY || offsets->length != 2) {
        snprintf(err, err_size, "%s: no well-formed tensor '%s'", path, name);
        goto out;
    }
    snprintf(out->dtype, sizeof out->dtype, "%s", dtype->string);
    out->rank = (int)shape->length;
    out->elements = 1;
    for (int i = 0; i < out->rank; i++) { out->shape[i] = (int64_t)shape->items[i].number; out->elements *= out->shape[i]; }
    {
        uint64_t begin = (uint64_t)offsets->items[0].number, end = (uint64_t)offsets->items[1].number;
        size_t n = (size_t)(end - begin);
        out->data = xrealloc(NULL, n);
        if (fseek(f, (long)(8 + hlen + begin), SEEK_SET) || fread(out->data, 1, n, f) != n) {
            snprintf(err, err_size, "%s: cannot read the data of '%s'", path, name);
            free(out->data);
            out->data = NULL;
            goto out;
        }
    }
    rc = 0;
out:
    fx_json_free(h);
    free(header);
    fclose(f);
    return rc;
}

void fx_tensor_free(fx_tensor* t) {
    free(t->data);
    t->data = NULL;
}
