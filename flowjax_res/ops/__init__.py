"""Pure functions on arrays: no Flax, no state, no I/O. One mechanism per file."""
