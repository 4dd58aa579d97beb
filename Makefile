# Two set-up commands on a fresh machine: `make demo` and `make test`.
# Both create .venv and install enginekit with every extra this machine can use, pinned by constraints.txt
# (torch is the local CPU wheel; never let pip choose torch itself).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit example clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[torch,openvino,tensorrt-rtx,paddle,plot,images,metrics,ray,test]'
	# paddle2onnx pins an old onnx for post-processing enginekit does not use: keep the stack's onnx.
	$(PIP) install -q -c constraints.txt --no-deps paddle2onnx
	# A real trained model from PyPI for tests (PaddleOCR's ONNX models ship inside this wheel);
	# only its model files are used, so its runtime dependencies are not installed.
	$(PIP) install -q -c constraints.txt --no-deps rapidocr-onnxruntime
	# Triton: tritonclient ships model_config.proto (config tests) and the HTTP client; nvidia-pytriton ships the
	# tritonserver binary (server test). Without deps: tritonclient pins ml-dtypes<=0.5.4 and pytriton numpy<2,
	# neither needed for what the tests use.
	$(PIP) install -q -c constraints.txt --no-deps tritonclient nvidia-pytriton
	$(PIP) install -q -c constraints.txt geventhttpclient python-rapidjson urllib3 greenlet
	# Debian's Chromium renders report.html in the browser test (skipped with the reason where it cannot be installed)
	command -v chromium >/dev/null 2>&1 || (apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
		|| (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1) \
		|| echo "chromium could not be installed: the report.html browser test will be skipped")
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/enginekit demo --report enginekit-report

lint: install
	$(BIN)/ruff check src tests examples
	# the layer order of docs/ARCHITECTURE.md and no import circles (contracts in pyproject.toml)
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q

test: lint typecheck unit

# Retrain the bundled example (deterministic) and rewrite its weights, ONNX file and test split.
example: install
	$(BIN)/python examples/digits/train.py

clean:
	rm -rf $(VENV) enginekit-report .pytest_cache .mypy_cache .ruff_cache
