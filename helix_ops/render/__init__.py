"""Renderers: pure functions from a :class:`~helix_ops.stack.Stack` to target documents (dicts, text)."""
