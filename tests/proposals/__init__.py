"""Tests of calls for proposals, proposals, their teams and attachments."""
