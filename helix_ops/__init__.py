"""helix-ops core: pure configuration models, renderers and planners for the Helix stack.

Nothing in this package performs network or process I/O (enforced by ``.importlinter`` and
``tests/core/test_core_purity.py``); drivers do, using what the core decides.

Typical use from a flow::

    from helix_ops.descriptor import load_descriptor
    from helix_ops.stack import build_stack, secret_blocks
    from helix_ops.render.compose import render_compose
    from helix_ops.render.kubernetes import render_kubernetes
    from helix_ops.plan import compose_objects, compute_plan, CurrentState

    descriptor = load_descriptor("deployments/local.yaml")
    stack = build_stack(descriptor)
    plan = compute_plan(compose_objects(render_compose(stack)), CurrentState())
"""

__version__ = "0.1.0"
