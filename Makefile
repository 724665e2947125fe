# The two commands in the README. Each creates .venv when needed and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-dates test-date-ahead test-date-back lint bench clean

# The suite runs in parallel (pytest-xdist): most tests wait on subprocesses, servers, browsers
# and fsyncs rather than compute, so more workers than the 2 cores keep both busy. Every test
# shares nothing with another: ports from free_port, a PostgreSQL schema and Celery queue each,
# files under tmp_path. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 4

# The date-proof runs: the tests that involve time (send engine, schedules and approvals, tokens,
# rate limits, bounce windows, staff lock-out and sessions, the console's schedules), again with
# the process clock a year ahead and a year back (tests/conftest.py, time-machine). SQLite only,
# and no test that starts a `digest` subprocess: a subprocess does not inherit the moved clock.
TIME_TESTS := tests/test_send.py tests/test_send_faults.py tests/test_schedule.py tests/test_tokens.py \
	tests/test_signup_abuse.py tests/test_bounce_policy.py \
	tests/test_suppression_paths.py tests/test_web_staff.py tests/test_staff_cli.py \
	tests/test_web_staff_schedules.py tests/test_console_data.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps make reinstalling happen only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/digest demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal
	$(MAKE) --no-print-directory -j2 --output-sync=target test-dates

# The two date-proof runs are independent of each other, so `make -j2` runs them side by side.
test-dates: test-date-ahead test-date-back

test-date-ahead: $(VENV)/.installed-test
	DIGEST_TEST_TIME_SHIFT_DAYS=365 $(BIN)/python -m pytest -q -p no:cacheprovider -k "not postgresql" $(TIME_TESTS)

test-date-back: $(VENV)/.installed-test
	DIGEST_TEST_TIME_SHIFT_DAYS=-365 $(BIN)/python -m pytest -q -p no:cacheprovider -k "not postgresql" $(TIME_TESTS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check digest subscribers tests bench
	$(BIN)/ruff format --check digest subscribers tests bench

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) outbox .pytest_cache
