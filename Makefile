# make demo: create .venv, install, run the main job on the bundled samples.
# make test: create .venv, install, run the whole test suite (the slow end-to-end tests included).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint clean bench-cpu bench-scaling gpu-check mutation mutation-quick slurm-up slurm-down
BENCH_OUT ?= bench-out

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,launchers,zarr,zoo]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) evaluate.py corruption=motion_blur severity=2 allow_untrained_fallback=true

test: $(STAMP)
	$(PY) -m pytest -q

# The suite to run per change (under 5 minutes on 2 cores): no end-to-end runs, one worker per core, each module's
# tests on one worker (--dist loadscope) so that module-scoped fixtures (models, cells run once) are built once.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n auto --dist loadscope

# The CPU table of BENCHMARKS.md (about 15 minutes on 2 cores).
bench-cpu: $(STAMP)
	$(PY) -m benchmarks.pipeline --images 512 --baseline-images 48 --batch-size 16 --workers 2 --warm-cache --out $(BENCH_OUT)/cpu_fp32.json
	$(PY) -m benchmarks.pipeline --images 512 --baseline-images 48 --batch-size 16 --workers 2 --warm-cache --channels-last --out $(BENCH_OUT)/cpu_fp32_channels_last.json
	$(PY) -m benchmarks.pipeline --images 512 --baseline-images 48 --batch-size 16 --workers 2 --warm-cache --channels-last --bf16 --out $(BENCH_OUT)/cpu_bf16_channels_last.json
	$(PY) -m benchmarks.pipeline --compare-bf16 --images 128 --batch-size 16 --workers 2 --out $(BENCH_OUT)/cpu_bf16_deviation.json

# The scaling table of BENCHMARKS.md: time and peak memory against image count and size (about 10 minutes).
bench-scaling: $(STAMP)
	$(PY) -m benchmarks.pipeline --scaling --scaling-images 100,1000,5000 --scaling-sizes 224,512,1024 --scaling-size-images 24 --batch-size 16 --workers 2 --corruption brightness --severity 1 --out $(BENCH_OUT)/cpu_scaling.json

# The GPU check (about 6 minutes on one GPU, meant to stay under 8): every test marked `cuda` (nvJPEG, cuFFT,
# grid_sample corruption ports, attribution and similarity on the device; IQA_REQUIRE_CUDA=1 turns a missing device
# into failures), then the GPU table of BENCHMARKS.md (fp32, bf16 + channels_last, the corruption backends, the bf16
# deviation) and the sweep profile that benchmarks.plan reads, JSON under $(BENCH_OUT)/gpu-check-$(DEVICE)/.
# On a GPU machine with any Python that has the package installed: make gpu-check PY=python. DEVICE=cpu runs the
# same commands on a few images (CI: .ci/run), so a renamed file or option fails there first
# (tests/bench/test_gpu_check.py checks what they name).
DEVICE ?= cuda
GPU_CHECK_OUT := $(BENCH_OUT)/gpu-check-$(DEVICE)
ifeq ($(DEVICE),cpu)
GPU_CHECK_REQUIRE := 0
GPU_CHECK_RUN := --images 8 --baseline-images 2 --batch-size 4 --workers 1
GPU_CHECK_SMALL := --images 4 --batch-size 4 --workers 1
GPU_CHECK_PROFILE := --images 4 --severities 0,1
else
GPU_CHECK_REQUIRE := 1
GPU_CHECK_RUN := --images 2048 --baseline-images 96 --batch-size 256 --workers 16
GPU_CHECK_SMALL := --images 512 --batch-size 128 --workers 8
GPU_CHECK_PROFILE := --images 1024 --override dataset.batch_size=256
endif
# the default virtual environment is made first; PY=python uses whatever is installed
gpu-check: $(if $(filter $(VENV)/bin/python,$(PY)),$(STAMP))
	IQA_REQUIRE_CUDA=$(GPU_CHECK_REQUIRE) $(PY) -m pytest -q -p no:cacheprovider -m cuda tests
	$(PY) -m benchmarks.pipeline --device $(DEVICE) $(GPU_CHECK_RUN) --warm-cache --out $(GPU_CHECK_OUT)/fp32.json
	$(PY) -m benchmarks.pipeline --device $(DEVICE) $(GPU_CHECK_RUN) --bf16 --channels-last --out $(GPU_CHECK_OUT)/bf16_channels_last.json
	$(PY) -m benchmarks.pipeline --device $(DEVICE) --compare-backends --corruption contrast $(GPU_CHECK_SMALL) --out $(GPU_CHECK_OUT)/backends.json
	$(PY) -m benchmarks.pipeline --device $(DEVICE) --compare-bf16 $(GPU_CHECK_SMALL) --out $(GPU_CHECK_OUT)/bf16_deviation.json
	$(PY) -m benchmarks.profile --device $(DEVICE) $(GPU_CHECK_PROFILE) --out $(GPU_CHECK_OUT)/profile.json

# A single-node Slurm cluster on this machine, all state in $(SLURM_DIR) (needs root; see docs/slurm.md).
SLURM_DIR ?= /tmp/iqa-slurm
slurm-up:
	scripts/slurm_cluster.sh up $(SLURM_DIR)

slurm-down:
	scripts/slurm_cluster.sh down $(SLURM_DIR)

# Mutation testing (mutmut) of the modules behind the reported numbers, one module at a time with its fast tests
# (scripts/mutation.toml): the formulas (about 8 minutes on 2 cores) and the plumbing (cells per mutant: far longer),
# so the whole campaign runs on a schedule and before a release. Fails below 90% or on a survivor not reviewed in
# docs/mutation.md (modules with gate = false are scored only). mutation-quick: the similarity metrics only (about
# 2 minutes), for CI on every push.
mutation: $(STAMP)
	$(PY) scripts/mutation.py

mutation-quick: $(STAMP)
	$(PY) scripts/mutation.py similarity

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf outputs multirun .pytest_cache
