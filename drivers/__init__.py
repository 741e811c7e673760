"""Side effects behind small interfaces: each module talks to one backend and translates its errors into the
helix-ops error tree (:mod:`helix_ops.errors`). The pure core decides; drivers act."""
