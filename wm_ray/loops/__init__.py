"""Single-process loops (no Ray): the reference semantics the distributed runtime reproduces."""
