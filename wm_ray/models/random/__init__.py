"""The uniform random baseline (``random``): acts at random, does not learn."""
