# The two commands of the README. Both install what they need (Debian
# packages via scripts/setup.sh) and build with CMake.
.PHONY: bench test build clean

# The main job: the default suite of rpa-bench against this machine's own
# limits (under 2 minutes), with its JSON and roofline plot under out/.
bench: build
	mkdir -p out
	./build/rpa-bench --json out/bench.json --plot out/roofline.png

# Every test, every build flavour (see scripts/test.sh).
test:
	./scripts/test.sh

build:
	./scripts/setup.sh
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build -j

clean:
	rm -rf build build-gcc build-clang build-asan build-tsan build-aarch64 build-*.log
