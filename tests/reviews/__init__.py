"""Tests of peer review: the pool, conflicts of interest, assignments, reviews and the ranking."""
