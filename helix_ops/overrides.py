"""What upgrade-helix and scale-helix changed, kept as the environment's desired overrides (pure).

An upgrade or a scale changes a running environment without touching its descriptor file. So that the next
``deploy-helix`` does not silently put the old tag or replica count back, their results are kept (a Prefect
Variable per project and environment: ``tasks/overrides.py``) and every deploy applies them on top of the
descriptor and lists them in its plan. ``deploy-helix -p reset_overrides=true`` deploys the descriptor as it
is and forgets them; :meth:`Overrides.patch` prints them as the descriptor lines that make them permanent.
"""

from __future__ import annotations

from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from helix_ops.changes import split_image, with_images, with_replicas
from helix_ops.descriptor import IMAGE_REF_PATTERN, Descriptor

ImageRef = Annotated[StrictStr, Field(pattern=IMAGE_REF_PATTERN)]


class Overrides(BaseModel):
    """Service → image (``repository:tag``) and service → replicas that differ from the descriptor."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    images: dict[str, ImageRef] = {}
    replicas: dict[str, StrictInt] = {}

    @property
    def is_empty(self) -> bool:
        return not self.images and not self.replicas

    def applied_to(self, descriptor: Descriptor) -> Descriptor:
        """``descriptor`` with these overrides (the same validation and scaling rules as a descriptor file)."""
        out = with_images(descriptor, self.images, include_data_services=True) if self.images else descriptor
        for service, count in sorted(self.replicas.items()):
            out = with_replicas(out, service, count)
        return out

    def upgraded(self, images: dict[str, str]) -> Overrides:
        """After an upgrade to ``images`` (service → ``repository:tag``)."""
        return self.model_copy(update={"images": {**self.images, **images}})

    def scaled(self, service: str, replicas: int) -> Overrides:
        return self.model_copy(update={"replicas": {**self.replicas, service: replicas}})

    def without_images(self, services: set[str]) -> Overrides:
        """Without the image overrides of ``services`` (an upgrade back to the descriptor's tags)."""
        return self.model_copy(update={"images": {s: i for s, i in self.images.items() if s not in services}})

    def pruned(self, descriptor: Descriptor) -> Overrides:
        """Without the overrides the descriptor already says (promoted into the file)."""
        data = descriptor.model_dump(by_alias=True, mode="json")["services"]
        images = {s: ref for s, ref in self.images.items()
                  if ref != f"{data[s]['image']['repository']}:{data[s]['image']['tag']}"}
        replicas = {s: n for s, n in self.replicas.items() if data[s].get("replicas", 1) != n}
        return Overrides(images=images, replicas=replicas)

    def lines(self, descriptor: Descriptor) -> list[str]:
        """One line per override, with what the descriptor says."""
        data = descriptor.model_dump(by_alias=True, mode="json")["services"]
        out = [f"{s}: image {ref} (the descriptor says {data[s]['image']['repository']}:{data[s]['image']['tag']})"
               for s, ref in sorted(self.images.items())]
        out += [f"{s}: {n} replicas (the descriptor says {data[s].get('replicas', 1)})"
                for s, n in sorted(self.replicas.items())]
        return out

    def patch(self) -> str:
        """The descriptor lines that make these overrides permanent (``services:`` entries, YAML)."""
        services: dict[str, dict] = {}
        for s, ref in self.images.items():
            repo, tag = split_image(ref)
            services.setdefault(s, {})["image"] = {"repository": repo, "tag": tag}
        for s, n in self.replicas.items():
            services.setdefault(s, {})["replicas"] = n
        return yaml.safe_dump({"services": services}, sort_keys=True) if services else ""


def image_ref(descriptor: Descriptor, service: str) -> str:
    """``repository:tag`` of ``service`` in ``descriptor``."""
    image = descriptor.model_dump(by_alias=True, mode="json")["services"][service]["image"]
    return f"{image['repository']}:{image['tag']}"


def variable_name(project: str, environment: str) -> str:
    """The Prefect Variable that keeps the overrides of one project's environment."""
    return f"helix-overrides-{project}-{environment}"
