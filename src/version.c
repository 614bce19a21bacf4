/* The library's version, and the size of each public structure by name, so
   that code which mirrors include/rpa.h rather than compiling it (the
   Python package's ctypes structures, other languages' bindings) can tell
   at load time whether its copy matches this build. */
#include <string.h>

#include "rpa.h"

#define RPA_STR_(x) #x
#define RPA_STR(x) RPA_STR_(x)

/* CMakeLists.txt passes the project() version; a build without it falls back
   on the header's numbers. */
#ifdef RPA_BUILD_VERSION
_Static_assert(RPA_BUILD_VERSION_MAJOR == RPA_VERSION_MAJOR &&
                   RPA_BUILD_VERSION_MINOR == RPA_VERSION_MINOR &&
                   RPA_BUILD_VERSION_PATCH == RPA_VERSION_PATCH,
               "include/rpa.h's RPA_VERSION_* differ from the version in "
               "CMakeLists.txt's project()");
#else
#define RPA_BUILD_VERSION \
  RPA_STR(RPA_VERSION_MAJOR) "." RPA_STR(RPA_VERSION_MINOR) "." RPA_STR(RPA_VERSION_PATCH)
#endif

const char *rpa_version(void) { return RPA_BUILD_VERSION; }

int rpa_version_number(void) { return RPA_VERSION_NUMBER; }

size_t rpa_abi_struct_size(const char *name) {
  static const struct {
    const char *name;
    size_t size;
  } structs[] = {
      {"rpa_args", sizeof(rpa_args)},
      {"rpa_tensor", sizeof(rpa_tensor)},
      {"rpa_kv_cache", sizeof(rpa_kv_cache)},
      {"rpa_context_options", sizeof(rpa_context_options)},
      {"rpa_v3_options", sizeof(rpa_v3_options)},
      {"rpa_attn_state", sizeof(rpa_attn_state)},
  };
  if (!name) return 0;
  for (size_t i = 0; i < sizeof structs / sizeof structs[0]; i++)
    if (strcmp(name, structs[i].name) == 0) return structs[i].size;
  return 0;
}
