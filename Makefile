# The two commands the README promises, plus the heavier ones.
CARGO ?= cargo

.PHONY: test demo bench lint build fuzz

build:
	$(CARGO) build --workspace --bins

# Every test: unit tests and end-to-end tests against real Envoy.
test:
	@scripts/test.sh

# Pilot, two versions of a service behind their own sidecars, and traffic
# moving between them as the VirtualService changes.
demo:
	@envoy=$$(scripts/envoy.sh) && \
	$(CARGO) build --workspace --bins && \
	TRIREME_ENVOY=$$envoy scripts/demo.sh

# Benchmarks (not part of `make test`): criterion generators and the ADS load tool.
bench:
	@envoy=$$(scripts/envoy.sh) && \
	$(CARGO) build --release --workspace --bins && \
	$(CARGO) bench -p pilot --bench generate && \
	TRIREME_ENVOY=$$envoy scripts/bench.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The fuzz targets (config directory, ADS requests, Mixer attributes and
# expressions, Envoy's AttributeContext, statsd datagrams and mapping files, CSRs, admission reviews), briefly: FUZZ_SECONDS each.
fuzz:
	@scripts/fuzz.sh
