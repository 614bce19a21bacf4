/* GGUF reader: see gguf.h. The format (as written by llama.cpp's gguf
   python package): magic "GGUF", u32 version, u64 tensor count, u64 kv
   count, the key/values, the tensor infos, padding to general.alignment
   (default 32), then the tensor data; all little-endian. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct cursor {
  const uint8_t *base;
  size_t size, pos;
  char *err;
  size_t errlen;
  int failed;
} cursor;

static void fail(cursor *c, const char *fmt, ...) {
  if (c->failed) return;
  c->failed = 1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, c->errlen, fmt, ap);
  va_end(ap);
}

static const uint8_t *take(cursor *c, uint64_t n, const char *what) {
  if (c->failed) return NULL;
  if (n > c->size - c->pos) {
    fail(c, "truncated file: %s needs %llu bytes at offset %zu, file has %zu",
         what, (unsigned long long)n, c->pos, c->size);
    return NULL;
  }
  const uint8_t *p = c->base + c->pos;
  c->pos += (size_t)n;
  return p;
}

static uint32_t rd_u32(cursor *c, const char *what) {
  const uint8_t *p = take(c, 4, what);
  uint32_t v = 0;
  if (p) memcpy(&v, p, 4);
  return v;
}

static uint64_t rd_u64(cursor *c, const char *what) {
  const uint8_t *p = take(c, 8, what);
  uint64_t v = 0;
  if (p) memcpy(&v, p, 8);
  return v;
}

static gguf_str rd_str(cursor *c, const char *what) {
  gguf_str s = {NULL, 0};
  s.len = rd_u64(c, what);
  s.ptr = (const char *)take(c, s.len, what);
  return s;
}

static uint64_t scalar_size(uint32_t t) {
  switch (t) {
  case GGUF_T_U8: case GGUF_T_I8: case GGUF_T_BOOL: return 1;
  case GGUF_T_U16: case GGUF_T_I16: return 2;
  case GGUF_T_U32: case GGUF_T_I32: case GGUF_T_F32: return 4;
  case GGUF_T_U64: case GGUF_T_I64: case GGUF_T_F64: return 8;
  default: return 0;
  }
}

/* Skips one value of type t (not an array), checking its bounds. */
static void skip_value(cursor *c, uint32_t t, const char *key) {
  if (t == GGUF_T_STRING) {
    (void)rd_str(c, key);
    return;
  }
  uint64_t n = scalar_size(t);
  if (n == 0) {
    fail(c, "metadata key '%s': unknown value type %u", key, t);
    return;
  }
  (void)take(c, n, key);
}

/* A name from the file, for a message: at most 200 bytes, and bytes that
   are not printable ASCII shown as '?' (a corrupt name may hold anything). */
static void printable_name(char *out, size_t cap, gguf_str s) {
  size_t n = s.len > 200 ? 200 : (size_t)s.len;
  if (n + 1 > cap) n = cap - 1;
  for (size_t i = 0; i < n; i++) {
    const unsigned char ch = (unsigned char)s.ptr[i];
    out[i] = ch >= 32 && ch < 127 ? (char)ch : '?';
  }
  out[n] = 0;
}

uint64_t ggml_block_elems(uint32_t type) {
  switch (type) {
  case GGML_T_F32: case GGML_T_F16: case GGML_T_BF16: return 1;
  case GGML_T_Q4_0: case GGML_T_Q4_1: case GGML_T_Q8_0: return 32;
  default: return 0;
  }
}

uint64_t ggml_block_bytes(uint32_t type) {
  switch (type) {
  case GGML_T_F32: return 4;
  case GGML_T_F16: case GGML_T_BF16: return 2;
  case GGML_T_Q4_0: return 18;  /* f16 d, 16 bytes of nibbles */
  case GGML_T_Q4_1: return 20;  /* f16 d, f16 m, 16 bytes of nibbles */
  case GGML_T_Q8_0: return 34;  /* f16 d, 32 int8 */
  default: return 0;
  }
}

const char *ggml_type_name(uint32_t type) {
  switch (type) {
  case GGML_T_F32: return "F32";
  case GGML_T_F16: return "F16";
  case GGML_T_BF16: return "BF16";
  case GGML_T_Q4_0: return "Q4_0";
  case GGML_T_Q4_1: return "Q4_1";
  case GGML_T_Q8_0: return "Q8_0";
  default: return "unknown";
  }
}

int gguf_str_eq(gguf_str s, const char *c) {
  size_t n = strlen(c);
  return s.len == n && memcmp(s.ptr, c, n) == 0;
}

void gguf_close(gguf_file *f) {
  if (f->kvs) {
    for (uint64_t i = 0; i < f->n_kv; i++) free((void *)f->kvs[i].items);
  }
  free(f->kvs);
  free(f->tensors);
  if (f->map) munmap(f->map, f->size);
  memset(f, 0, sizeof *f);
}

int gguf_open(gguf_file *f, const char *path, char *err, size_t errlen) {
  memset(f, 0, sizeof *f);
  int fd = open(path, O_RDONLY);
  if (fd < 0) {
    snprintf(err, errlen, "cannot open model file '%s': %s", path,
             strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "'%s' is not a regular file", path);
    close(fd);
    return -1;
  }
  if (st.st_size < 24) {
    snprintf(err, errlen,
             "'%s': truncated file (%lld bytes; a GGUF header is 24)", path,
             (long long)st.st_size);
    close(fd);
    return -1;
  }
  f->size = (size_t)st.st_size;
  f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (f->map == MAP_FAILED) {
    f->map = NULL;
    snprintf(err, errlen, "cannot mmap '%s': %s", path, strerror(errno));
    return -1;
  }
  cursor c = {f->map, f->size, 0, err, errlen, 0};
  const uint8_t *magic = take(&c, 4, "magic");
  if (memcmp(magic, "GGUF", 4) != 0) {
    snprintf(err, errlen, "'%s' is not a GGUF file (bad magic)", path);
    gguf_close(f);
    return -1;
  }
  f->version = rd_u32(&c, "version");
  if (f->version != 2 && f->version != 3) {
    snprintf(err, errlen, "'%s': GGUF version %u is not supported (2 or 3)",
             path, f->version);
    gguf_close(f);
    return -1;
  }
  f->n_tensors = rd_u64(&c, "tensor count");
  f->n_kv = rd_u64(&c, "metadata count");
  /* Each kv takes at least 12 bytes and each tensor info at least 24: a
     count beyond what the file can hold is malformed (and would make the
     allocations below absurd). */
  if (f->n_kv > f->size / 12 || f->n_tensors > f->size / 24) {
    snprintf(err, errlen, "'%s': malformed header (%llu keys, %llu tensors "
             "in %zu bytes)", path, (unsigned long long)f->n_kv,
             (unsigned long long)f->n_tensors, f->size);
    gguf_close(f);
    return -1;
  }
  f->kvs = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kvs);
  f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
  if (!f->kvs || !f->tensors) {
    snprintf(err, errlen, "out of memory reading '%s'", path);
    gguf_close(f);
    return -1;
  }
  f->alignment = 32;
  char key[256];
  for (uint64_t i = 0; i < f->n_kv && !c.failed; i++) {
    gguf_kv *kv = &f->kvs[i];
    kv->key = rd_str(&c, "metadata key");
    if (c.failed) break;
    printable_name(key, sizeof key, kv->key);
    kv->type = rd_u32(&c, key);
    kv->count = 1;
    if (kv->type == GGUF_T_ARRAY) {
      kv->elem_type = rd_u32(&c, key);
      kv->count = rd_u64(&c, key);
      kv->data = c.base + c.pos;
      if (c.failed) break;
      if (kv->elem_type == GGUF_T_STRING) {
        if (kv->count > (c.size - c.pos) / 8) {
          fail(&c, "truncated file: string array '%s' of %llu items", key,
               (unsigned long long)kv->count);
          break;
        }
        kv->items = malloc(sizeof *kv->items * (size_t)(kv->count ? kv->count : 1));
        if (!kv->items) {
          fail(&c, "out of memory");
          break;
        }
        for (uint64_t j = 0; j < kv->count && !c.failed; j++) {
          kv->items[j] = c.base + c.pos;
          (void)rd_str(&c, key);
        }
      } else if (kv->elem_type == GGUF_T_ARRAY) {
        fail(&c, "metadata key '%s': nested arrays are not supported", key);
      } else {
        uint64_t n = scalar_size(kv->elem_type);
        if (n == 0)
          fail(&c, "metadata key '%s': unknown array element type %u", key,
               kv->elem_type);
        else if (kv->count > (c.size - c.pos) / n)
          fail(&c, "truncated file: array '%s' of %llu items", key,
               (unsigned long long)kv->count);
        else
          (void)take(&c, kv->count * n, key);
      }
    } else {
      kv->data = c.base + c.pos;
      skip_value(&c, kv->type, key);
    }
    if (!c.failed && gguf_str_eq(kv->key, "general.alignment")) {
      if (kv->type != GGUF_T_U32) {
        fail(&c, "general.alignment must be a u32");
      } else {
        uint32_t a;
        memcpy(&a, kv->data, 4);
        if (a == 0 || (a & (a - 1)) != 0)
          fail(&c, "general.alignment %u is not a power of two", a);
        f->alignment = a;
      }
    }
  }
  for (uint64_t i = 0; i < f->n_tensors && !c.failed; i++) {
    gguf_tensor *t = &f->tensors[i];
    t->name = rd_str(&c, "tensor name");
    if (c.failed) break;
    printable_name(key, sizeof key, t->name);
    t->n_dims = rd_u32(&c, key);
    if (c.failed) break;
    if (t->n_dims == 0 || t->n_dims > 4) {
      fail(&c, "tensor '%s': %u dimensions (1 to 4 allowed)", key, t->n_dims);
      break;
    }
    uint64_t n = 1;
    for (uint32_t d = 0; d < 4; d++) t->dims[d] = 1;
    for (uint32_t d = 0; d < t->n_dims && !c.failed; d++) {
      t->dims[d] = rd_u64(&c, key);
      if (t->dims[d] == 0 || t->dims[d] > ((uint64_t)1 << 40) ||
          n > (((uint64_t)1 << 62) / t->dims[d])) {
        fail(&c, "tensor '%s': dimension %u is %llu", key, d,
             (unsigned long long)t->dims[d]);
        break;
      }
      n *= t->dims[d];
    }
    t->type = rd_u32(&c, key);
    t->offset = rd_u64(&c, key);
    if (c.failed) break;
    uint64_t be = ggml_block_elems(t->type), bb = ggml_block_bytes(t->type);
    if (be == 0) {
      /* Unknown to us: the size cannot be checked, and nothing can use it;
         the model loader reports it by name if it is needed. */
      t->nbytes = 0;
      continue;
    }
    if (t->dims[0] % be != 0) {
      fail(&c, "tensor '%s': row of %llu elements is not a whole number of "
           "%s blocks", key, (unsigned long long)t->dims[0],
           ggml_type_name(t->type));
      break;
    }
    t->nbytes = n / be * bb;
  }
  if (!c.failed) {
    uint64_t start = (c.pos + f->alignment - 1) / f->alignment * f->alignment;
    if (start > f->size) {
      fail(&c, "truncated file: no data section after the tensor infos");
    } else {
      f->data_start = c.base + start;
      uint64_t avail = f->size - start;
      for (uint64_t i = 0; i < f->n_tensors && !c.failed; i++) {
        gguf_tensor *t = &f->tensors[i];
        printable_name(key, sizeof key, t->name);
        if (t->offset % f->alignment != 0)
          fail(&c, "tensor '%s': offset %llu is not aligned to %llu",
               key, (unsigned long long)t->offset,
               (unsigned long long)f->alignment);
        else if (t->offset > avail || t->nbytes > avail - t->offset)
          fail(&c, "truncated file: tensor '%s' (%llu bytes at data offset "
               "%llu) ends past the end of the file (%llu data bytes)",
               key, (unsigned long long)t->nbytes,
               (unsigned long long)t->offset, (unsigned long long)avail);
        else
          t->data = f->data_start + t->offset;
      }
    }
  }
  if (c.failed) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", err);
    snprintf(err, errlen, "'%s': %s", path, msg);
    gguf_close(f);
    return -1;
  }
  return 0;
}

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key) {
  for (uint64_t i = 0; i < f->n_kv; i++)
    if (gguf_str_eq(f->kvs[i].key, key)) return &f->kvs[i];
  return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
  for (uint64_t i = 0; i < f->n_tensors; i++)
    if (gguf_str_eq(f->tensors[i].name, name)) return &f->tensors[i];
  return NULL;
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out) {
  const gguf_kv *kv = gguf_find_kv(f, key);
  if (!kv) return -1;
  uint64_t v;
  switch (kv->type) {
  case GGUF_T_U8: v = kv->data[0]; break;
  case GGUF_T_U16: { uint16_t x; memcpy(&x, kv->data, 2); v = x; break; }
  case GGUF_T_U32: { uint32_t x; memcpy(&x, kv->data, 4); v = x; break; }
  case GGUF_T_U64: memcpy(&v, kv->data, 8); break;
  case GGUF_T_I32: {
    int32_t x;
    memcpy(&x, kv->data, 4);
    if (x < 0) return -1;
    v = (uint64_t)x;
    break;
  }
  case GGUF_T_I64: {
    int64_t x;
    memcpy(&x, kv->data, 8);
    if (x < 0) return -1;
    v = (uint64_t)x;
    break;
  }
  default: return -1;
  }
  if (v > UINT32_MAX) return -1;
  *out = (uint32_t)v;
  return 0;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out) {
  const gguf_kv *kv = gguf_find_kv(f, key);
  if (!kv) return -1;
  if (kv->type == GGUF_T_F32) {
    memcpy(out, kv->data, 4);
    return 0;
  }
  if (kv->type == GGUF_T_F64) {
    double d;
    memcpy(&d, kv->data, 8);
    *out = (float)d;
    return 0;
  }
  return -1;
}

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out) {
  const gguf_kv *kv = gguf_find_kv(f, key);
  if (!kv || kv->type != GGUF_T_STRING) return -1;
  memcpy(&out->len, kv->data, 8);
  out->ptr = (const char *)kv->data + 8;
  return 0;
}

gguf_str gguf_array_str(const gguf_kv *kv, uint64_t i) {
  gguf_str s;
  memcpy(&s.len, kv->items[i], 8);
  s.ptr = (const char *)kv->items[i] + 8;
  return s;
}
