# Two entry points, both self-contained on a fresh machine:
#   make test   create .venv if missing, install the project with the pinned versions, run pytest
#   make demo   same set-up, then the main job on the built-in shapes dataset
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: test demo install clean

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
test: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

demo: $(STAMP)
	$(PY) tools/demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache runs/demo
