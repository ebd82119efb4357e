# authmilter — the two commands: `make run` and `make test`.
# Both work on a fresh Debian machine: they install what is missing (apt packages,
# a virtualenv, the package) and then run.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
APT_RUN  := libmilter-dev gcc
APT_TEST := postfix knot knot-dnsutils opendkim opendkim-tools opendmarc swaks postgresql postsrsd postgrey unbound
# Sendmail for tests/e2e/sendmail: Debian will not install it beside Postfix, so its .debs are
# unpacked under run/sendmail (tests/e2e/sendmail/dist.py); these are what it needs from apt.
APT_SENDMAIL := m4 libwrap0 liblockfile1 libldap-2.5-0 libsasl2-modules
# The Debian package (make deb, tests/e2e/test_deb.py): the tools that build and check it, the
# man page renderer, and the package's Depends: (dpkg -i installs no dependencies).
APT_DEB := dpkg-dev lintian groff-base man-db adduser python3-milter python3-spf python3-authres python3-cryptography
# The bench's extra peer (bench/cold.py): Debian's rspamd, run by the bench with its own config.
APT_BENCH := rspamd
STAMP  := $(VENV)/.installed

.PHONY: run test fuzz deps test-deps bench-deps lint bench bench-cold clean deb

run: deps
	$(VENV)/bin/authmilter demo

test: deps test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# The fuzzers of tests/fuzz/ with a larger budget than `make test` gives them: milter
# sessions over the real socket (a new seed each run unless AUTHMILTER_FUZZ_SEED is set;
# a failure prints the seed) and the parser property tests with random examples.
FUZZ_ITERATIONS ?= 5000
fuzz: deps test-deps
	@seed=$${AUTHMILTER_FUZZ_SEED:-$$(date +%s)}; echo "fuzz: AUTHMILTER_FUZZ_SEED=$$seed"; \
	AUTHMILTER_FUZZ_SEED=$$seed AUTHMILTER_FUZZ_ITERATIONS=$${AUTHMILTER_FUZZ_ITERATIONS:-$(FUZZ_ITERATIONS)} \
	AUTHMILTER_FUZZ_PROFILE=fuzz AUTHMILTER_FUZZ_STALLS=$${AUTHMILTER_FUZZ_STALLS:-4} \
	  $(PY) -m pytest -p no:cacheprovider -rxX tests/fuzz $(PYTEST_ARGS)

# apt packages: installed only when missing, so a prepared machine needs no network.
# Services are never started by these installs (the tests run their own copies).
APT_ENSURE = ensure() { missing=""; for p in "$$@"; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  [ -z "$$missing" ] && return 0; echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing || \
	  { $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; }; }; ensure

deps: $(STAMP)

$(STAMP): pyproject.toml
	@$(APT_ENSURE) $(APT_RUN)
	@$(PYTHON) -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")) else 1)' || \
	  { $(APT_ENSURE) python3-dev python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

test-deps:
	@$(APT_ENSURE) $(APT_TEST) $(APT_SENDMAIL) $(APT_DEB)
	@$(PYTHON) tests/e2e/sendmail/dist.py || { [ "$${CI:-}" != true ] && echo "sendmail: not available, its e2e tests will be skipped"; }

# build/authmilter_VERSION_all.deb: a staged tree packed by dpkg-deb (packaging/build_deb.py says
# what is bundled and why), then lintian, which must report no error.
deb: deps
	@$(APT_ENSURE) $(APT_DEB)
	@deb=$$(SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || date +%s) $(PY) packaging/build_deb.py --outdir build) && \
	  echo "built $$deb" && lintian --fail-on error $$deb

lint: deps
	$(PIP) install -q ruff mypy
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src

# rspamd's postinst would start a system rspamd (init script or systemd unit): the install
# runs behind a policy-rc.d that forbids starting services (unless the machine has one), and
# whatever system rspamd exists afterwards is stopped and disabled. The bench runs its own.
bench-deps:
	@dpkg -s $(APT_BENCH) >/dev/null 2>&1 || { \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; tmp=""; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then tmp=1; printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null; \
	    $$SUDO chmod 755 /usr/sbin/policy-rc.d; fi; \
	  $(APT_ENSURE) $(APT_BENCH); rc=$$?; \
	  [ -z "$$tmp" ] || $$SUDO rm -f /usr/sbin/policy-rc.d; \
	  if [ -d /run/systemd/system ]; then $$SUDO systemctl disable --now rspamd.service >/dev/null 2>&1 || true; \
	  else $$SUDO update-rc.d rspamd disable >/dev/null 2>&1 || true; fi; \
	  [ ! -e /run/rspamd/rspamd.pid ] || [ ! -x /etc/init.d/rspamd ] || $$SUDO /etc/init.d/rspamd stop >/dev/null 2>&1 || true; \
	  exit $$rc; }

bench: deps test-deps bench-deps
	$(PY) bench/run.py

# cold caches, 20 ms DNS latency, a real client's pace; rspamd as a peer (bench/README.md)
bench-cold: deps test-deps bench-deps
	$(PY) bench/cold.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) run build src/*.egg-info .pytest_cache
