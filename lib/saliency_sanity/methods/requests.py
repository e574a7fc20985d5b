"""How a caller names the methods to run: the one request grammar of every multi-method call.

``"gradcam"``, ``"gradcam/positive"`` (short for ``aggregation="positive"``), ``("label", "name",
{options})`` and ``("name", {options})``; ``options`` (``{name: {option: value}}``) fills in what a
request leaves unset.
"""
from __future__ import annotations

from typing import Iterable

from .registry import get_method

MethodRequest = tuple[str, str, dict]


def method_requests(methods: Iterable, options: dict | None = None) -> list[MethodRequest]:
    """Normalise method requests to ``(label, registry name, options)``.

    Accepts one name or a sequence of ``"name"``, ``"name/aggregation"``, ``(label, name, options)``
    and ``(name, options)``; ``options[name]`` is merged under each request's own options. Labels must
    be unique (and not ``"target"``, the key under which the explained classes are returned)."""
    if isinstance(methods, str):
        methods = [methods]
    options = {} if options is None else options
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise TypeError("options must map method names to option dicts, e.g. "
                        "{'integrated_gradients': {'steps': 16}}")
    out: list[MethodRequest] = []
    for m in methods:
        if isinstance(m, str):
            name, _, aggregation = m.partition("/")
            label, opts = m, ({"aggregation": aggregation} if aggregation else {})
        elif isinstance(m, (tuple, list)) and len(m) == 3 and isinstance(m[2], dict):
            label, name, opts = str(m[0]), m[1], dict(m[2])
        elif isinstance(m, (tuple, list)) and len(m) == 2 and isinstance(m[1], dict):
            label, name, opts = f"{m[0]}" + "".join(f"/{v}" for v in m[1].values()), m[0], dict(m[1])
        else:
            raise TypeError(f"cannot read method request {m!r}; use 'name', 'name/aggregation', "
                            "(name, options) or (label, name, options)")
        get_method(name)
        out.append((label, name, {**options.get(name, {}), **opts}))
    labels = [r[0] for r in out]
    if not labels:
        raise ValueError("methods is empty; pass at least one method")
    if len(set(labels)) != len(labels) or "target" in labels:
        raise ValueError(f"method labels must be unique and not 'target', got {labels}")
    unused = set(options) - {name for _, name, _ in out}
    if unused:
        raise ValueError(f"options given for method(s) {sorted(unused)} that are not requested")
    return out
