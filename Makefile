# The workshop's commands. `make run` and `make test` do all their own set-up.
SHELL := /bin/bash
PY := .venv/bin/python
# make run STEP=04 serves steps/04-*; without STEP it serves final/.
APP := $(if $(STEP),$(wildcard steps/$(STEP)-*),final)
# make run SERVICES=1 uses MariaDB and SASL memcached from services.env instead of the embedded default.
LOAD_SERVICES := $(if $(SERVICES),set -a && . ./services.env && set +a &&,)
EMBEDDED := env -u RDS_HOSTNAME -u MEMCACHIER_SERVERS -u MEMCACHIER_USERNAME -u MEMCACHIER_PASSWORD

.PHONY: help setup services services-stop services-status run test clean check progress grade \
        doctor dashboard deploy-check bench cluster cluster-stop notebooks lab workspace watch

help:
	@echo "make run [STEP=NN] [APP=dir] [PORT=n]   serve final/ (or a step, or your app) at http://127.0.0.1:5000"
	@echo "                 SERVICES=1 uses MariaDB + SASL memcached; a PORT given once is remembered"
	@echo "make test        every test, on real MariaDB, memcached and chromium"
	@echo "make services    start MariaDB, memcached and SASL memcached on loopback; writes services.env"
	@echo "make services-status   the workshop's ports and who holds them; make services-stop stops them"
	@echo "make workspace   your own copy of step 01 in workspace/"
	@echo "make watch [APP=dir]             check your app at every save, stage after stage"
	@echo "make check STEP=NN [APP=dir]     does your app do what stage NN asks? (APP: workspace/)"
	@echo "make progress [APP=dir]          every stage, the highest reached and the stage at fault"
	@echo "make dashboard [PORT=n] [APP=dir]   memcached's counters and your app's stages at http://127.0.0.1:5050"
	@echo "make grade DIRS=\"class/*\" [JOBS=n] [FORMAT=markdown]   grade a class (HTML report, table, CSV, JSON, Markdown, JUnit)"
	@echo "make deploy-check [APP=dir]      rehearse eb deploy of final/ (or your app) on this machine"
	@echo "make doctor      diagnose Python, packages, services, the SASL plugin and ports"
	@echo "README.md lists every command."

setup:
	@bash scripts/setup.sh

services: setup
	@echo "==> starting services"
	@python3 -m runtime.services start

services-stop:
	@python3 -m runtime.services stop

services-status:
	@python3 -m runtime.services status

# make run PORT=5001 (or make dashboard PORT=5051): that port from now on, in every terminal.
CHOSEN_PORT = port=$$(python3 -m runtime.services port $(1) $(PORT)) || exit 2

run: setup $(if $(SERVICES),services,)
	@test -d "$(APP)" || { echo "run: no step folder matches STEP=$(STEP)" >&2; exit 2; }
	@$(call CHOSEN_PORT,app); echo "==> serving $(APP) at http://127.0.0.1:$$port (Ctrl-C stops it)"; \
	$(if $(SERVICES),$(LOAD_SERVICES),$(EMBEDDED)) PORT=$$port bash -c 'cd "$(APP)" && \
	  if [ -d migrations ]; then $(CURDIR)/$(PY) -m flask --app application --debug db upgrade; fi && \
	  exec $(CURDIR)/$(PY) -m flask --app application run --debug --host 127.0.0.1 --port "$$PORT"'

# Two workers, each taking whole test files (their module fixtures boot apps once per file).
test: services
	@echo "==> running the tests"
	@$(PY) -m pytest -n 2 --dist loadfile

# make check STEP=04 APP=workspace: does the app do what stage 04 asks?
# APP defaults to workspace/ here (the APP above is make run's folder, so only a command-line APP counts).
CHECKED := $(if $(filter command line,$(origin APP)),$(APP),workspace)
check: services
	@test -n "$(STEP)" || { echo "check: name the stage, e.g. make check STEP=04" >&2; exit 2; }
	@$(PY) -m checks run "$(STEP)" "$(CHECKED)"

progress: services
	@$(PY) -m checks progress "$(CHECKED)"

# make watch [APP=dir]: the first stage that does not pass yet, checked again at every save.
watch: services
	@$(PY) -m checks watch "$(CHECKED)"

doctor: setup
	@$(PY) -m checks doctor

# make dashboard [APP=dir]: beside the counters, the checker's latest verdicts on your app (workspace/).
dashboard: services
	@$(call CHOSEN_PORT,dashboard); $(PY) -m instruments.dashboard --port $$port \
	  $(if $(filter command line,$(origin APP)),--app "$(APP)",)

# make deploy-check [APP=dir]: rehearse `eb deploy` of APP (bundled as the EB CLI bundles a folder),
# or of the repository root (which serves final/) when no APP is given on the command line.
deploy-check: services
	@$(PY) -m rehearsal $(if $(filter command line,$(origin APP)),--dir "$(APP)",)

bench: services
	@$(PY) -m instruments.bench

cluster: setup
	@$(PY) -m instruments.cluster start

cluster-stop:
	@$(PY) -m instruments.cluster stop

clean:
	rm -rf build .pytest_cache

# make workspace: your own copy of step 01 in workspace/ (git-ignored), with a git repository of its own.
workspace:
	@python3 scripts/workspace.py create

# make catch-up STEP=05: replace workspace/'s code by checkpoint 05; your work stays in its git log.
.PHONY: catch-up
catch-up:
	@python3 scripts/workspace.py catch-up "$(STEP)"

# make grade DIRS="class/*" [JOBS=N] [OUT=build/grades] [FORMAT=markdown]: the instructor's batch;
# OUT/grades.html is the report to open in a browser;
# JOBS defaults to half the machine's cores (at least 1).
# make grade-bench: the checker's speed figures (all steps; 30 learner folders).
.PHONY: grade-bench
grade: services
	@test -n "$(DIRS)" || { echo 'grade: name the learner folders, e.g. make grade DIRS="class/*"' >&2; exit 2; }
	@$(PY) -m checks grade $(DIRS) $(if $(JOBS),--jobs $(JOBS)) --out "$(or $(OUT),build/grades)" \
	  --format $(or $(FORMAT),table)

grade-bench: services
	@$(PY) -m checks grade --bench $(if $(JOBS),--jobs $(JOBS))

# make notebooks [NB="01 06"]: run the notebooks; HTML copies and summaries go to build/notebooks/.
# NOTEBOOK_MAX_TASKS=1000 make notebooks: a quicker notebook 6 (the default goes to 10,000 tasks).
notebooks: services
	@$(PY) notebooks/nbtools.py $(NB)

# make lab: JupyterLab on notebooks/, with the workshop kernel (.venv's Python).
lab: services
	@$(PY) notebooks/nbtools.py --kernel
	@$(PY) -m jupyter lab --ServerApp.root_dir=notebooks --ServerApp.ip=127.0.0.1 \
	  --MappingKernelManager.default_kernel_name=workshop $(if $(filter 0,$(shell id -u)),--allow-root,)
