# Conveniences over scripts/: `make test` is the CI suite, `make bench` the
# benchmark (root; pass options with ARGS="--only reflector --rounds 5"),
# `make mutants` the mutation testing (root; ARGS go to cargo-mutants).
.PHONY: test bench demo mutants

test:
	scripts/test

bench:
	scripts/bench $(ARGS)

demo:
	scripts/demo

# Mutation testing of tundra_core and tundra_server (slow; root).
mutants:
	scripts/mutants $(ARGS)
