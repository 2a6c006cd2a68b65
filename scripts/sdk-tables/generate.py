"""Writes config/runway-api.toml from the installed `runwayml` SDK's own code and types.

    python generate.py COMMITTED OUT [NODE_SDK_DIR]

Reads, from the `runwayml` package importable by this interpreter:
- every request the SDK's resources make (`self._get/_post/_patch/_delete/_get_api_list`
  with a literal path, `path_template(...)` or an f-string): the API's routes;
- the task-creating ones: a `_post` whose answer is cast with `create_waitable_resource`
  (what gives the SDK's answer `wait_for_task_output`), with the `model` Literal values of
  its `*_create_params` type, where its answer carries the estimate (`estimatedCost`, or
  `routing.estimatedCost` for the model router) and where the task's model is named
  (the request's `model`, the router's `routing.model`, or the recipe's path);
- the task statuses (`status: Literal[...]` of `TaskRetrieveResponse`'s members);
- the organization usage report's model names (`OrganizationRetrieveUsageResponse`:
  `models` and `results[].usedCredits[].model`).

The hand-kept sections `[legacy]` and `[taskless]` (model -> why) are read from COMMITTED
and written back unchanged; every model the usage report names must be in exactly one of
create calls, `[legacy]`, `[taskless]`, else this exits 1 naming it. With NODE_SDK_DIR
(an installed `@runwayml/sdk`), its create paths and models are compared with these and
any difference exits 1. Output is deterministic: sorted, no timestamps.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pathlib
import re
import sys
import textwrap
import tomllib
import typing

import runwayml
from runwayml.types import organization_retrieve_usage_response, task_retrieve_response

HTTP_CALLS = {
    "_get": "GET",
    "_get_api_list": "GET",
    "_post": "POST",
    "_patch": "PATCH",
    "_delete": "DELETE",
    "_put": "PUT",
}


def fail(msg: str) -> typing.NoReturn:
    print(f"generate.py: {msg}", file=sys.stderr)
    sys.exit(1)


def literal_values(tp) -> list[str]:
    """The string values of a Literal, through Required/Annotated/Optional wrappers."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return [v for v in typing.get_args(tp) if isinstance(v, str)]
    if origin is typing.Union or origin in (typing.Annotated, typing.List, list) or (
        origin is not None and getattr(origin, "__name__", "") in ("Required", "NotRequired")
    ):
        return [v for a in typing.get_args(tp) for v in literal_values(a)]
    if origin is None and hasattr(tp, "__origin__"):
        return literal_values(tp.__origin__)
    return []


def union_members(tp) -> list:
    """The members of a (possibly Annotated) Union, or the type itself."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return union_members(typing.get_args(tp)[0])
    if origin is typing.Union:
        return [m for a in typing.get_args(tp) for m in union_members(a)]
    return [tp]


def path_of(node: ast.expr) -> str | None:
    """A request's path as a template: "/v1/tasks/{id}"."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "path_template":
        return path_of(node.args[0])
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(v.value)
            else:
                parts.append("{" + ast.unparse(v.value) + "}")
        return "".join(parts)
    return None


def call_name(node: ast.expr) -> str | None:
    return node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None


class Route:
    def __init__(self) -> None:
        self.methods: set[str] = set()


class Create:
    def __init__(self, path: str) -> None:
        self.path = path
        self.models: set[str] = set()
        self.estimated_cost = "none"
        self.model_from = "none"
        self.node_lacks: set[str] = set()


def response_estimate(resp: type) -> tuple[str, str | None]:
    """Where a create answer carries its estimate, and where it names the model."""
    fields = resp.model_fields
    if "estimated_cost" in fields:
        return "estimatedCost", None
    if "routing" in fields:
        routing = fields["routing"].annotation
        rf = routing.model_fields
        est = "routing.estimatedCost" if "estimated_cost" in rf else "none"
        return est, "routing.model" if "model" in rf else None
    return "none", None


def read_resources(usage_models: set[str]) -> tuple[dict[str, Route], dict[str, Create]]:
    routes: dict[str, Route] = {}
    creates: dict[str, Create] = {}
    root = pathlib.Path(runwayml.__file__).parent / "resources"
    for file in sorted(root.rglob("*.py")):
        modname = "runwayml." + ".".join(file.relative_to(root.parent).with_suffix("").parts)
        module = importlib.import_module(modname)
        tree = ast.parse(file.read_text())
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            if cls.name.startswith("Async"):
                continue  # the async client makes the same requests
            for call in (n for n in ast.walk(cls) if isinstance(n, ast.Call)):
                f = call.func
                if not isinstance(f, ast.Attribute) or f.attr not in HTTP_CALLS:
                    continue
                if getattr(f.value, "id", "") != "self":
                    continue
                path = path_of(call.args[0]) if call.args else None
                if path is None:
                    fail(f"{file.name}:{call.lineno}: a request whose path is not a literal")
                routes.setdefault(path, Route()).methods.add(HTTP_CALLS[f.attr])
                kw = {k.arg: k.value for k in call.keywords}
                cast = kw.get("cast_to")
                if call_name(cast) == "cast":  # cast(Type[X], create_waitable_resource(X, ...))
                    cast = cast.args[1]
                if HTTP_CALLS[f.attr] != "POST" or call_name(cast) != "create_waitable_resource":
                    continue
                c = creates.setdefault(path, Create(path))
                resp = getattr(module, cast.args[0].id)
                c.estimated_cost, routed = response_estimate(resp)
                body = kw.get("body")
                params = None
                if call_name(body) == "maybe_transform" and isinstance(body.args[1], ast.Attribute):
                    params = getattr(getattr(module, body.args[1].value.id), body.args[1].attr)
                for td in union_members(params) if params is not None else []:
                    hints = typing.get_type_hints(td, include_extras=True)
                    if "model" in hints:
                        c.models.update(literal_values(hints["model"]))
                if c.models:
                    c.model_from = "body"
                elif routed:
                    c.model_from = routed
                elif path.rsplit("/", 1)[1] in usage_models:
                    # A recipe has no model; the usage report names it by its path.
                    c.model_from = "path"
                    c.models.add(path.rsplit("/", 1)[1])
    return routes, creates


def task_statuses() -> list[str]:
    """The `status` Literals of TaskRetrieveResponse's members (one model per status)."""
    out = set()
    for m in union_members(task_retrieve_response.TaskRetrieveResponse):
        if inspect.isclass(m) and "status" in getattr(m, "model_fields", {}):
            out.update(literal_values(m.model_fields["status"].annotation))
    if not out:
        fail("no task status found in TaskRetrieveResponse")
    return sorted(out)


def usage_models() -> set[str]:
    """The usage report's model names: its `models` list and each `usedCredits[].model`."""
    r = organization_retrieve_usage_response
    listed = r.OrganizationRetrieveUsageResponse.model_fields["models"].annotation
    models = set(literal_values(listed))
    models |= set(literal_values(r.ResultUsedCredit.model_fields["model"].annotation))
    if not models:
        fail("no model names found in OrganizationRetrieveUsageResponse")
    return models


def node_creates(node_dir: pathlib.Path) -> dict[str, set[str]]:
    """The Node SDK's create paths (posts wrapped as waitable) and the models of each file."""
    res = node_dir / "node_modules" / "@runwayml" / "sdk" / "resources"
    out: dict[str, set[str]] = {}
    post = re.compile(r"wrapAsWaitableResource\)?\(this\._client\)\(this\._client\.post\('([^']+)'")
    model = re.compile(r"^\s+model: '([^']+)';$", re.M)
    for js in sorted(res.rglob("*.js")):
        paths = post.findall(js.read_text())
        if not paths:
            continue
        models = set(model.findall(js.with_suffix(".d.ts").read_text()))
        for p in paths:
            out[p] = set(models) if len(paths) == 1 else set()
    return out


def toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_list(items) -> str:
    items = sorted(items)
    if len(items) <= 3:
        return "[" + ", ".join(toml_str(i) for i in items) + "]"
    return "[\n" + "".join(f"  {toml_str(i)},\n" for i in items) + "]"


HEADER = """\
# Runway's API as the pinned SDKs know it: routes, task-creating endpoints and their
# models, task statuses, the usage report's model names. Compiled into the binary
# (src/runway_api.rs).
#
# GENERATED by scripts/sdk-tables/generate.py from runwayml {version}{node}.
# Do not edit by hand, except the [legacy], [taskless] and [usage_alias] sections, which
# the generator keeps as they are. Refresh: scripts/sdk-tables/run.sh; check (part of
# scripts/test.sh): scripts/sdk-tables/run.sh --check.
#
# [[route]]: every request the SDK makes, as a path template and its methods.
# [[create]]: a POST whose answer is a new task (`id`, polled at /v1/tasks/{{id}}).
#   estimated_cost  where the answer carries Runway's estimate: "estimatedCost",
#                   "routing.estimatedCost" (the model router) or "none"
#   model_from      where the task's model is named: "body" (the request's `model`, one
#                   of `models`), "routing.model" (the router's answer), "path" (a
#                   recipe: the usage report names it by its last path segment)
# Hand-kept, model -> why:
#   [legacy]       no create call takes it any more; old logs and the usage report still
#                  name it, and its usage is spend on tasks. Never a create model.
#   [taskless]     its usage is spend on a product without tasks (realtime sessions,
#                  voice processing): no task can explain it. May also be a create model.
#   [usage_alias]  a usage report name for tasks that carry another model (the value).
# Every usage model is a create model, or in one of these: the generator fails otherwise.
"""


def hand_problems(committed, usage, current, legacy, taskless, alias) -> list[str]:
    """What the hand-kept sections get wrong, given what the SDK knows."""
    problems = [
        f"{m!r} is in [legacy] but a create call takes it: remove it there"
        for m in sorted(set(legacy) & current)
    ]
    problems += [f"{m!r} is in both [legacy] and [taskless]" for m in sorted(set(legacy) & set(taskless))]
    problems += [
        f"[usage_alias] {m!r} is a model name of its own: remove it there"
        for m in sorted(set(alias) & (current | set(legacy) | set(taskless)))
    ]
    problems += [
        f"[usage_alias] {m!r} -> {t!r}: no create call takes {t!r}"
        for m, t in sorted(alias.items())
        if t not in current
    ]
    problems += [
        f"usage model {m!r} has no create call: add it to [legacy], [taskless] or [usage_alias] of {committed}"
        for m in sorted(usage - current - set(legacy) - set(taskless) - set(alias))
    ]
    return problems


def hand_section(name: str, table: dict[str, str]) -> str:
    lines = [f"[{name}]"]
    for model in sorted(table):
        lines.append(f"{toml_str(model)} = {toml_str(table[model])}")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) not in (3, 4):
        fail("usage: generate.py COMMITTED OUT [NODE_SDK_DIR]")
    committed, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    hand = tomllib.loads(committed.read_text()) if committed.exists() else {}
    legacy: dict[str, str] = hand.get("legacy", {})
    taskless: dict[str, str] = hand.get("taskless", {})
    alias: dict[str, str] = hand.get("usage_alias", {})

    usage = usage_models()
    routes, creates = read_resources(usage)
    current = {m for c in creates.values() for m in c.models}
    problems = hand_problems(committed, usage, current, legacy, taskless, alias)
    problems += [f"create {p}: no model in its request, answer or usage name" for p, c in creates.items() if c.model_from == "none"]

    node_note = ""
    if len(sys.argv) == 4:
        node_dir = pathlib.Path(sys.argv[3])
        package = json.loads((node_dir / "node_modules/@runwayml/sdk/package.json").read_text())
        node_note = f",\n# create calls cross-checked with @runwayml/sdk {package['version']}"
        node = node_creates(node_dir)
        # The table is the Python SDK's: Node may lag behind it (noted), never lead it.
        for p in sorted(set(node) - set(creates)):
            problems.append(f"create path {p} is known to the Node SDK only")
        for p in sorted(set(node) & set(creates)):
            if creates[p].model_from == "body":
                only_node = sorted(node[p] - creates[p].models)
                problems += [f"{p}: model {m!r} is known to the Node SDK only" for m in only_node]
                creates[p].node_lacks = creates[p].models - node[p]
        for p in sorted(set(creates) - set(node)):
            creates[p].node_lacks = {"(the endpoint)"}
    if problems:
        fail("\n  ".join(["the SDKs know what the table does not:"] + problems))

    text = [HEADER.format(version=runwayml.__version__, node=node_note)]
    text.append(f"sdk = {toml_str('runwayml ' + runwayml.__version__)}\n")
    text.append(f"task_statuses = {toml_list(task_statuses())}\n")
    text.append(f"usage_models = {toml_list(usage)}\n")
    for path in sorted(routes):
        text.append(f"[[route]]\npath = {toml_str(path)}\nmethods = {toml_list(routes[path].methods)}\n")
    for path in sorted(creates):
        c = creates[path]
        lacks = ""
        if c.node_lacks:
            note = "Not in the Node SDK: " + ", ".join(sorted(c.node_lacks))
            lacks = "".join(f"# {line}\n" for line in textwrap.wrap(note, 86, subsequent_indent="  "))
        text.append(
            f"[[create]]\n{lacks}path = {toml_str(path)}\nestimated_cost = {toml_str(c.estimated_cost)}\n"
            f"model_from = {toml_str(c.model_from)}\nmodels = {toml_list(c.models)}\n"
        )
    text.append(hand_section("legacy", legacy))
    text.append(hand_section("taskless", taskless))
    text.append(hand_section("usage_alias", alias))
    out.write_text("\n".join(text))


if __name__ == "__main__":
    main()
