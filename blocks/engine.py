"""Where the container engine and the Kubernetes cluster are: reused integration blocks, no new classes.

* Container engine (Docker or Podman's Docker-compatible API): prefect-docker's ``DockerHost`` block
  (``base_url`` such as ``unix:///run/podman/podman.sock`` or ``tcp://127.0.0.1:2375``).
  :func:`save_docker_host` creates it, :func:`load_docker_host` loads it.
* Kubernetes: prefect-kubernetes' ``KubernetesClusterConfig`` (a kubeconfig as a dict plus a context name;
  ``KubernetesClusterConfig.from_file(path, context_name=...)``) wrapped by ``KubernetesCredentials``
  (``cluster_config=...``). Create them with prefect-kubernetes directly::

      from prefect_kubernetes.credentials import KubernetesClusterConfig, KubernetesCredentials
      config = KubernetesClusterConfig.from_file("~/.kube/config", context_name="prod")
      config.save("helix-prod-cluster")
      KubernetesCredentials(cluster_config=config).save("helix-prod-cluster")

  Note that a kubeconfig may contain tokens and client keys; ``KubernetesClusterConfig.config`` is a plain
  dict, so keep that block's name out of logs and never return it from a task.
"""

from __future__ import annotations

from prefect_docker import DockerHost


def save_docker_host(name: str, base_url: str, *, overwrite: bool = False, timeout: int | None = None) -> DockerHost:
    """Save a ``DockerHost`` block called ``name`` pointing at ``base_url``; returns it.

    Example::

        save_docker_host("helix-local-engine", "unix:///run/user/1000/podman/podman.sock")
    """
    host = DockerHost(base_url=base_url, timeout=timeout)
    host.save(name, overwrite=overwrite)
    return host


def load_docker_host(name: str) -> DockerHost:
    """Load the ``DockerHost`` block called ``name`` (use ``host.get_client()`` for a docker client)."""
    return DockerHost.load(name)
