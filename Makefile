# aslfr: `make demo` runs the pipeline on synthetic data, `make test` runs the tests.
# Each target sets up what it needs from nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo

TOOLS ?= .tools/onnx2tf

VIDEO ?= .tools/video

.PHONY: install tools video web browser allocator demo test bench clean

install: $(VENV)/.installed

# The TFLite converter (onnx2tf pins its own TensorFlow and NumPy) and tflite-runtime 2.14.0,
# the runtime Kaggle's evaluator used, in their own environment.
tools: $(TOOLS)/.installed

$(TOOLS)/.installed:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --upgrade pip
	$(TOOLS)/bin/pip install -q onnx2tf==1.29.24 tensorflow==2.19.0 onnx==1.19.1 onnxsim==0.4.36 \
		numpy==1.26.4 tflite-runtime==2.14.0 'pyarrow<20'
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,export,web]'
	touch $@

# MediaPipe Holistic (the 'video' extra) needs numpy<2: its own environment, which aslfr calls.
video: $(VIDEO)/.installed

$(VIDEO)/.installed:
	$(PYTHON) -m venv $(VIDEO)
	$(VIDEO)/bin/pip install -q --upgrade pip
	$(VIDEO)/bin/pip install -q mediapipe==0.10.21 'numpy<2' 'pyarrow<20' 'tqdm>=4.60' scikit-image==0.26.0
	touch $@

# The browser's runtime files, pinned in package.json and package-lock.json (MediaPipe Holistic's
# wasm and models, ONNX Runtime Web, hyparquet): `aslfr export` copies them into web/.
web: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# Chromium for the browser tests and benchmark: Debian's package (Playwright drives it and
# downloads no browser of its own).
browser:
	@if command -v chromium >/dev/null || [ -n "$$ASLFR_CHROMIUM" ]; then echo "Chromium is installed"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	else echo "install Chromium for the browser tests: sudo apt install chromium (or set ASLFR_CHROMIUM)"; fi

# Optional: tcmalloc, the caching allocator that train, score and pipeline restart with
# (src/aslfr/memory.py): seed-size training steps run up to 2.7x faster than on glibc's malloc.
allocator:
	@if ldconfig -p 2>/dev/null | grep -q 'libtcmalloc_minimal.so.4\|libjemalloc.so.2'; then \
		echo "a caching allocator is installed"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q libtcmalloc-minimal4; \
	else echo "install it with: sudo apt install libtcmalloc-minimal4 (Debian/Ubuntu), or your system's gperftools"; fi

demo: install tools web
	$(VENV)/bin/aslfr synth $(DEMO_DIR)/data --sequences 2000 --participants 16 --files 4 --seed 0 --workers 2
	$(VENV)/bin/aslfr pipeline --data $(DEMO_DIR)/data --out $(DEMO_DIR)/run --preset demo --jobs 2
	@echo "Live: two demo phrases streamed at their own pace, the text growing as the hand moves:"
	$(VENV)/bin/aslfr live $$(ls $(DEMO_DIR)/data/train_landmarks/*.parquet | head -1) --limit 2 --realtime \
		--model $(DEMO_DIR)/run/export/submission.zip

test: install tools video web browser
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/prepare.py

clean:
	rm -rf $(VENV) $(TOOLS) $(VIDEO) $(DEMO_DIR) node_modules
