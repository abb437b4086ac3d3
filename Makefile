# make demo: create .venv, install, run the main job on the bundled samples.
# make test: create .venv, install, run the whole test suite (the slow end-to-end tests included).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint clean bench-cpu bench-scaling bench-gpu mutation mutation-quick slurm-up slurm-down
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

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The CPU table of BENCHMARKS.md (about 15 minutes on 2 cores).
bench-cpu: $(STAMP)
	$(PY) -m benchmarks.pipeline --images 512 --baseline-images 48 --batch-size 16 --workers 2 --warm-cache --out $(BENCH_OUT)/cpu_fp32.json
	$(PY) -m benchmarks.pipeline --images 512 --baseline-images 48 --batch-size 16 --workers 2 --warm-cache --channels-last --out $(BENCH_OUT)/cpu_fp32_channels_last.json
	$(PY) -m benchmarks.pipeline --images 512 --baseline-images 48 --batch-size 16 --workers 2 --warm-cache --channels-last --bf16 --out $(BENCH_OUT)/cpu_bf16_channels_last.json
	$(PY) -m benchmarks.pipeline --compare-bf16 --images 128 --batch-size 16 --workers 2 --out $(BENCH_OUT)/cpu_bf16_deviation.json

# The scaling table of BENCHMARKS.md: time and peak memory against image count and size (about 10 minutes).
bench-scaling: $(STAMP)
	$(PY) -m benchmarks.pipeline --scaling --scaling-images 100,1000,5000 --scaling-sizes 224,512,1024 --scaling-size-images 24 --batch-size 16 --workers 2 --corruption brightness --severity 1 --out $(BENCH_OUT)/cpu_scaling.json

# On a GPU machine, with any Python that has the package installed (make bench-gpu PY=python): the CUDA tests,
# then the GPU table of BENCHMARKS.md and the bf16 deviation (about 8 minutes on one H200).
bench-gpu:
	$(PY) -m pytest -q tests/test_attribution.py -k gpu
	$(PY) -m benchmarks.pipeline --device cuda --images 4096 --baseline-images 128 --batch-size 256 --workers 16 --warm-cache --out $(BENCH_OUT)/gpu_fp32.json
	$(PY) -m benchmarks.pipeline --device cuda --images 4096 --baseline-images 64 --batch-size 256 --workers 16 --warm-cache --bf16 --channels-last --out $(BENCH_OUT)/gpu_bf16_channels_last.json
	$(PY) -m benchmarks.pipeline --device cuda --compare-bf16 --images 512 --batch-size 128 --workers 8 --out $(BENCH_OUT)/gpu_bf16_deviation.json

# A single-node Slurm cluster on this machine, all state in $(SLURM_DIR) (needs root; see docs/slurm.md).
SLURM_DIR ?= /tmp/iqa-slurm
slurm-up:
	scripts/slurm_cluster.sh up $(SLURM_DIR)

slurm-down:
	scripts/slurm_cluster.sh down $(SLURM_DIR)

# Mutation testing (mutmut) of the modules behind the reported numbers, one module at a time with its fast tests
# (scripts/mutation.toml; about 8 minutes on 2 cores). Fails below 90% or on a survivor not reviewed in
# docs/mutation.md. mutation-quick: the similarity metrics only (about 2 minutes), for CI.
mutation: $(STAMP)
	$(PY) scripts/mutation.py

mutation-quick: $(STAMP)
	$(PY) scripts/mutation.py similarity

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf outputs multirun .pytest_cache
