#include "harness.h"
int main(void) { return th_finish("test_cache"); }
