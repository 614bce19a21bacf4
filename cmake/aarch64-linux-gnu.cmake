# Cross-compiling for 64-bit Arm Linux with Debian's cross toolchain
# (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross):
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
# The programs run under qemu-user (qemu-aarch64 -L /usr/aarch64-linux-gnu),
# which CMAKE_CROSSCOMPILING_EMULATOR names for ctest.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(RPA_CROSS_TRIPLE aarch64-linux-gnu)
set(RPA_CROSS_SYSROOT /usr/${RPA_CROSS_TRIPLE})
if(NOT CMAKE_C_COMPILER)
  set(CMAKE_C_COMPILER ${RPA_CROSS_TRIPLE}-gcc)
endif()

set(CMAKE_FIND_ROOT_PATH ${RPA_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

find_program(RPA_QEMU_AARCH64 qemu-aarch64)
if(RPA_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${RPA_QEMU_AARCH64} -L ${RPA_CROSS_SYSROOT})
endif()
