/* A read-only GGUF (v2/v3) reader over an mmap'd file: header, metadata
   key/values (every value type, arrays included), tensor infos and the
   aligned data section. Every length and offset read from the file is
   checked against the file size before it is used, so a truncated or
   malformed file gives an error message, never a read past the mapping. */
#ifndef GEN_GGUF_H
#define GEN_GGUF_H

#include <stddef.h>
#include <stdint.h>

enum gguf_type {
  GGUF_T_U8 = 0, GGUF_T_I8 = 1, GGUF_T_U16 = 2, GGUF_T_I16 = 3,
  GGUF_T_U32 = 4, GGUF_T_I32 = 5, GGUF_T_F32 = 6, GGUF_T_BOOL = 7,
  GGUF_T_STRING = 8, GGUF_T_ARRAY = 9, GGUF_T_U64 = 10, GGUF_T_I64 = 11,
  GGUF_T_F64 = 12,
};

/* ggml tensor types this reader knows the block layout of (others are
   reported by number as unsupported). */
enum ggml_type {
  GGML_T_F32 = 0, GGML_T_F16 = 1, GGML_T_Q4_0 = 2, GGML_T_Q4_1 = 3,
  GGML_T_Q8_0 = 8, GGML_T_BF16 = 30,
};

typedef struct gguf_str {
  const char *ptr; /* not NUL-terminated: points into the mapping */
  uint64_t len;
} gguf_str;

typedef struct gguf_kv {
  gguf_str key;
  uint32_t type;       /* enum gguf_type */
  uint32_t elem_type;  /* arrays: the element type */
  uint64_t count;      /* arrays: element count; 1 otherwise */
  const uint8_t *data; /* the value (arrays: the first element) */
  /* String arrays: where element i starts (its u64 length), so that
     element access is O(1). NULL otherwise. */
  const uint8_t **items;
} gguf_kv;

typedef struct gguf_tensor {
  gguf_str name;
  uint32_t n_dims;
  uint64_t dims[4]; /* dims[0] is the innermost (contiguous) axis */
  uint32_t type;    /* enum ggml_type */
  uint64_t offset;  /* from the start of the data section */
  uint64_t nbytes;
  const uint8_t *data;
} gguf_tensor;

typedef struct gguf_file {
  void *map;
  size_t size;
  uint32_t version;
  uint64_t n_kv, n_tensors;
  gguf_kv *kvs;
  gguf_tensor *tensors;
  uint64_t alignment;
  const uint8_t *data_start;
} gguf_file;

/* 0 on success; otherwise -1 with a message in err. */
int gguf_open(gguf_file *f, const char *path, char *err, size_t errlen);
void gguf_close(gguf_file *f);

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);
/* Scalars: 0 on success, -1 if missing or of another type. Integer getters
   accept any integer type whose value fits. */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
int gguf_get_f32(const gguf_file *f, const char *key, float *out);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);
/* Element i of a string array (bounds already checked by gguf_open). */
gguf_str gguf_array_str(const gguf_kv *kv, uint64_t i);
/* Block size (elements) and bytes per block of a tensor type; 0 if unknown. */
uint64_t ggml_block_elems(uint32_t type);
uint64_t ggml_block_bytes(uint32_t type);
const char *ggml_type_name(uint32_t type);
int gguf_str_eq(gguf_str s, const char *c);

#endif
