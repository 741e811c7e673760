"""Every exception class of the project survives a pickle round trip (Prefect moves exceptions between
processes: a task run's failure in a worker, a subflow's in a pod), with the same type, message and fields."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
from typing import Any

import pytest

PACKAGES = ("helix_ops", "drivers", "tasks", "flows", "blocks")


def _classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in PACKAGES:
        package = importlib.import_module(name)
        modules = [package] + [importlib.import_module(f"{name}.{m.name}")
                               for m in pkgutil.walk_packages(package.__path__) if not m.name.startswith("_")
                               or m.name == "_validation"]
        for module in modules:
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__.split(".")[0] in PACKAGES:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def _sample(param: inspect.Parameter) -> Any:
    """A value for a constructor parameter, by its annotation (strings: ``from __future__ import annotations``)."""
    kind = str(param.annotation)
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
        return None
    if "bool" in kind:
        return True
    if "int" in kind or "float" in kind:
        return 3
    if "Sequence" in kind or "tuple" in kind or "list" in kind:
        return ("a", "b")
    if "dict" in kind or "Mapping" in kind:
        return {"k": "v"}
    if "Exception" in kind or "BaseException" in kind:
        return ValueError("inner")
    return f"{param.name}-value"


def _structured() -> dict[str, Any]:
    """Classes whose constructors take the project's own records, with a real one each."""
    from drivers.rollout import RolloutReport
    from helix_ops.audit import Finding, Item
    from helix_ops.preflight import Check

    item = Item(id="tls", title="TLS on", required=True, fix="turn it on")
    return {
        "helix_ops.audit.AuditFailed": lambda cls: cls("prod", [Finding(item=item, status="fail", detail="tls off")]),
        "flows.provision.PreflightFailed": lambda cls: cls("prod", [Check(name="port", status="fail", detail="taken", fix="free it")]),
        "drivers.rollout.RolloutFailed": lambda cls: cls(RolloutReport(service="dashboard", strategy="surge", started=["a"]),
                                         ValueError("not healthy")),
        "flows.upgrade._RollFailed": lambda cls: cls(["dashboard"], {"mcp-graph": ValueError("not healthy")}),
    }


def _instance(cls: type[BaseException]) -> BaseException:
    name = f"{cls.__module__}.{cls.__qualname__}"
    if name in _structured():
        return _structured()[name](cls)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    args, kwargs = [], {}
    for p in params:
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            args.append("message")
        elif p.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        elif p.kind is inspect.Parameter.KEYWORD_ONLY:
            kwargs[p.name] = _sample(p)
        elif p.default is inspect.Parameter.empty:
            args.append(_sample(p))
    return cls(*args, **kwargs)


CLASSES = _classes()


def test_the_project_has_exception_classes_to_check():
    names = {c.__name__ for c in CLASSES}
    assert {"HelixOpsError", "ConfigError", "WaitTimeout", "AuditFailed", "RolloutFailed"} <= names, names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_an_exception_survives_a_pickle_round_trip(cls):
    exc = _instance(cls)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert str(back) == str(exc)
    assert back.args == exc.args
    def comparable(value):  # exceptions compare by type and text, not identity
        if isinstance(value, BaseException):
            return (type(value), str(value))
        if isinstance(value, dict):
            return {k: comparable(v) for k, v in value.items()}
        return value

    assert {k: comparable(v) for k, v in vars(back).items()} == {k: comparable(v) for k, v in vars(exc).items()}
