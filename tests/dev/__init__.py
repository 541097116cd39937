"""Tests of the demo and development code (portal/dev)."""
