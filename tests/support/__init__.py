"""Helpers shared by the tests; the modules here hold no tests of their own."""
