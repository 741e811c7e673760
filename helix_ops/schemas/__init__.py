"""Vendored JSON schemas (package data); see README.md."""
