# Conveniences over scripts/: `make test` is the CI suite, `make bench` the
# benchmark (root; pass options with ARGS="--only reflector --rounds 5").
.PHONY: test bench demo

test:
	scripts/test

bench:
	scripts/bench $(ARGS)

demo:
	scripts/demo
