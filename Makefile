# Two entry points, both self-contained on a fresh machine:
#   make test   create .venv if missing, install the project with the pinned versions, run pytest
#   make demo   same set-up, then the main job on the built-in shapes dataset
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: test test-gpu demo install clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@# Every OpenCV wheel writes the same cv2 module and the last one installed wins: put the
	@# contrib build (selective search) back on top, then check that cv2.ximgproc is there.
	$(PY) -m pip install --quiet -c constraints.txt --force-reinstall --no-deps opencv-contrib-python-headless
	$(PY) -c "from detect.proposals.opencv_check import main; raise SystemExit(main())"
	@touch $@

# pytest exits 5 when it collects nothing; treat that as a failure, not a pass.
# Then the parity and fast-path tests once more with torch's and oneDNN's kernels forced to
# AVX2, so that an AVX-512 machine also proves the bounds hold where CI may land (AVX2-only).
FORCED_ISA := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
test: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	echo "make test: the parity tests again under $(FORCED_ISA)"; \
	$(FORCED_ISA) $(PY) -m pytest -q -m parity $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no parity tests collected" >&2; exit 1; fi; \
	exit $$rc

# The CUDA tests (each family trains under AMP and matches the CPU; NCCL with two GPUs) and
# the GPU rows of the benchmarks. Without a GPU the tests skip, saying so.
test-gpu: $(STAMP)
	$(PY) -m pytest -m cuda -rs $(PYTEST_ARGS)
	$(PY) tools/benchmark.py detectors --device cuda

demo: $(STAMP)
	$(PY) tools/demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache runs/demo
