"""Memory and CPU quantities in Kubernetes notation, converted for Compose.

Descriptors use Kubernetes notation: memory ``512Mi``, ``2Gi`` (binary units, as the guide's "MB"/"GB" are
read), CPU ``500m`` or ``2``. Compose wants ``512M``/``2G`` (Docker's units are binary) and ``cpus: "0.5"``.
"""

from __future__ import annotations

import re

_MEMORY = re.compile(r"^([1-9][0-9]*)(Ki|Mi|Gi|Ti)$")
_CPU = re.compile(r"^(?:([1-9][0-9]*)m|([0-9]+)(?:\.([0-9]{1,3}))?)$")
_FACTOR = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
MEMORY_FORM = "a memory size like 512Mi or 2Gi"
CPU_FORM = "a CPU amount like 500m or 2"


def memory_bytes(quantity: str) -> int:
    """``"512Mi"`` → 536870912. Raises ValueError for anything else."""
    match = _MEMORY.match(quantity)
    if not match:
        raise ValueError(f"{quantity!r} is not {MEMORY_FORM}")
    return int(match.group(1)) * _FACTOR[match.group(2)]


def cpu_millis(quantity: str) -> int:
    """``"500m"`` → 500, ``"2"`` → 2000, ``"0.5"`` → 500. Raises ValueError for anything else or zero."""
    match = _CPU.match(quantity)
    if not match:
        raise ValueError(f"{quantity!r} is not {CPU_FORM}")
    millis_text, whole, frac = match.groups()
    value = int(millis_text) if millis_text else int(whole) * 1000 + int((frac or "0").ljust(3, "0"))
    if value <= 0:
        raise ValueError(f"{quantity!r} must be more than zero")
    return value


def compose_memory(quantity: str) -> str:
    """Kubernetes memory quantity → Compose byte value (``2Gi`` → ``2G``, ``1536Mi`` → ``1536M``)."""
    memory_bytes(quantity)
    return quantity[:-1]


def compose_cpus(quantity: str) -> str:
    """Kubernetes CPU quantity → Compose ``cpus`` string (``500m`` → ``"0.5"``, ``2`` → ``"2"``)."""
    millis = cpu_millis(quantity)
    whole, frac = divmod(millis, 1000)
    return f"{whole}" if not frac else f"{whole}.{frac:03d}".rstrip("0")


def human_memory(n_bytes: int) -> str:
    """536870912 → ``512Mi`` (largest exact binary unit)."""
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        if n_bytes % _FACTOR[unit] == 0:
            return f"{n_bytes // _FACTOR[unit]}{unit}"
    return str(n_bytes)
