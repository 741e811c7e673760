"""Prefect flows: orchestration only (load → plan → act → verify → report); the work is in tasks/."""
