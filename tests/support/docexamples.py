"""The Python examples of the documentation: find them, check them, run them.

Every ```` ```python ```` block in ``docs/*.md`` is followed by a marker line saying how the tests
run it:

* ``<!-- test: run -->``: as written, in-process (no device, no network);
* ``<!-- test: device -->``: in a subprocess that plays into a PulseAudio null sink;
* ``<!-- test: server -->``: the same, with ``OPENAI_BASE_URL`` pointing at the local server
  on 127.0.0.1 (the OpenAI URL and placeholder key written in the example are replaced by it).

`check_calls` checks, without running anything, that every call of a name imported from
``streamtts`` (and of the methods of objects made from those names) binds to the real signature.

The lead exports the public names from ``streamtts/__init__.py``; until a name is exported,
`install_pending_exports` adds it to the ``streamtts`` module from the module that defines it, so
the examples can run (``tests/unit/test_docs.py`` pins that every imported name is exported).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

MODES = ("run", "device", "server")

_BLOCK = re.compile(
    r"^```python\n(?P<code>.*?)^```\n(?:<!-- test: (?P<mode>\w+) -->)?", re.S | re.M
)

#: Modules whose ``__all__`` names the docs may import from the top-level package.
PUBLIC_MODULES = (
    "streamtts.errors",
    "streamtts.events",
    "streamtts.ogg",
    "streamtts.opus",
    "streamtts.wav",
    "streamtts.formats",
    "streamtts.resample",
    "streamtts.policy",
    "streamtts.segment",
    "streamtts.trim",
    "streamtts.engines",
    "streamtts.player",
    "streamtts.speaker",
)


@dataclass(frozen=True)
class Example:
    """One Python block of a page."""

    page: str
    line: int
    code: str
    mode: str | None

    @property
    def id(self) -> str:
        """``page:line``, for test ids and messages."""
        return f"{self.page}:{self.line}"


def examples() -> list[Example]:
    """Every Python block of every page, in page order."""
    found = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        for m in _BLOCK.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(Example(path.name, line, m.group("code"), m.group("mode")))
    return found


def imported_names(code: str) -> list[str]:
    """Names imported with ``from streamtts import ...`` in ``code``."""
    names = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module == "streamtts":
            names += [alias.name for alias in node.names]
    return names


def _definitions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            out.setdefault(name, getattr(module, name))
    return out


def resolve(name: str) -> Any:
    """The object a top-level name stands for (exported or still pending)."""
    import streamtts

    if hasattr(streamtts, name):
        return getattr(streamtts, name)
    definitions = _definitions()
    if name not in definitions:
        raise LookupError(f"{name!r} is defined in none of the public modules")
    return definitions[name]


def install_pending_exports(names: list[str]) -> list[str]:
    """Add the names not yet exported by ``streamtts`` to it; returns those added."""
    import streamtts

    added = []
    for name in names:
        if not hasattr(streamtts, name):
            setattr(streamtts, name, resolve(name))
            added.append(name)
    return added


# ------------------------------------------------------------------------------ call checks


def _bind(target: Any, call: ast.Call, *, method: bool = False) -> str | None:
    """Bind a call's arguments to ``target``'s signature (or to a `inspect.Signature`); the
    error message, or None."""
    if isinstance(target, inspect.Signature):
        signature = target
    else:
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            return None
    params = list(signature.parameters.values())
    if method and params and params[0].name == "self":
        signature = signature.replace(parameters=params[1:])
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    ):
        return None  # *args / **kwargs: cannot be checked statically
    try:
        signature.bind(*call.args, **{k.arg: k.value for k in call.keywords if k.arg})
    except TypeError as exc:
        return f"{ast.unparse(call.func)}(...) at line {call.lineno}: {exc}"
    return None


def _constructed_class(node: ast.expr, classes: dict[str, Any]) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        cls = classes.get(node.func.id)
        return cls if inspect.isclass(cls) else None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in classes
    ):
        # A constructor classmethod, e.g. StartPolicy.adaptive(...): an instance of the class.
        owner = classes[node.func.value.id]
        if inspect.isclass(owner):
            return owner
    return None


def _returned_class(function: Any) -> Any:
    """The class a function is annotated to return (``X | None`` counts as ``X``), or None."""
    try:
        hint = typing.get_type_hints(function).get("return")
    except Exception:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1:
        hint = args[0]
    return hint if inspect.isclass(hint) else None


def _result_class(node: ast.expr, imported: dict[str, Any], found: dict[str, Any]) -> Any:
    """The class of ``Cls(...)``, ``f(...)``, ``var.method(...)`` or ``await var.method(...)``."""
    if isinstance(node, ast.Await):
        node = node.value
    cls = _constructed_class(node, imported)
    if cls is not None or not isinstance(node, ast.Call):
        return cls
    func = node.func
    if isinstance(func, ast.Name) and func.id in imported:
        return _returned_class(imported[func.id])
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        owner = found.get(func.value.id)
        if owner is not None and hasattr(owner, func.attr):
            return _returned_class(getattr(owner, func.attr))
    return None


def _variables(tree: ast.AST, imported: dict[str, Any]) -> dict[str, Any]:
    """Variable name → class, for ``x = Cls(...)``, ``async with Cls(...) as x``, and
    ``x = [await] var.method(...)`` / ``x = function(...)`` by their return annotations."""
    found: dict[str, Any] = {}
    nodes = sorted(
        (n for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.With, ast.AsyncWith))),
        key=lambda n: (n.lineno, n.col_offset),
    )
    for node in nodes:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            cls = _result_class(node.value, imported, found)
            if isinstance(target, ast.Name) and inspect.isclass(cls):
                found[target.id] = cls
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                cls = _constructed_class(item.context_expr, imported)
                if isinstance(item.optional_vars, ast.Name) and inspect.isclass(cls):
                    found[item.optional_vars.id] = cls
    return found


def check_calls(code: str) -> list[str]:
    """Calls in ``code`` that do not bind to the real signatures (messages; empty if fine).

    Checked: calls of names imported from ``streamtts``, their classmethods and static methods
    (``StartPolicy.adaptive(...)``), and methods called on variables made from those classes
    (``speaker.say(...)`` after ``async with Speaker() as speaker``).
    """
    tree = ast.parse(code)
    imported = {name: resolve(name) for name in imported_names(code)}
    variables = _variables(tree, imported)
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in imported:
            problem = _bind(imported[func.id], node)
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner_name, attr = func.value.id, func.attr
            if owner_name in imported:
                owner = imported[owner_name]
                if not hasattr(owner, attr):
                    problems.append(f"{owner_name}.{attr} does not exist (line {node.lineno})")
                    continue
                problem = _bind(getattr(owner, attr), node)
            elif owner_name in variables:
                cls = variables[owner_name]
                if not hasattr(cls, attr):
                    problems.append(
                        f"{cls.__name__} has no attribute {attr!r} (line {node.lineno})"
                    )
                    continue
                member = inspect.getattr_static(cls, attr)
                if isinstance(member, property):
                    problems.append(f"{cls.__name__}.{attr} is a property, not a method")
                    continue
                problem = _bind(getattr(cls, attr), node, method=True)
            else:
                continue
        else:
            continue
        if problem:
            problems.append(problem)
    return problems


def check_attributes(code: str) -> list[str]:
    """Attributes read on objects of known dataclasses that the dataclass does not have.

    ``result.first_sound_latency`` after ``result = await speaker.say(...)`` is checked against
    `SayResult` (its fields and class attributes: properties, methods). Objects of other classes
    are not checked here (their instance attributes are set in ``__init__``); running the
    examples checks them.
    """
    tree = ast.parse(code)
    imported = {name: resolve(name) for name in imported_names(code)}
    variables = _variables(tree, imported)
    problems = []
    for variable, attr, line in _attribute_uses(tree):
        cls = variables.get(variable)
        if cls is None or not dataclasses.is_dataclass(cls):
            continue
        names = {f.name for f in dataclasses.fields(cls)}
        if attr not in names and not hasattr(cls, attr):
            problems.append(f"{cls.__name__} has no attribute {attr!r} (line {line})")
    return problems


def _attribute_uses(tree: ast.AST) -> Iterator[tuple[str, str, int]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            yield node.value.id, node.attr, node.lineno


# ------------------------------------------------------------------------------ signatures in prose

#: Receivers written in the prose (``await player.play(...)``) → the class they stand for.
RECEIVERS = {
    "player": "Player",
    "speaker": "Speaker",
    "engine": "Engine",
    "audio": "AudioStream",
}

_SPAN = re.compile(r"`(?:await )?(?P<name>[A-Za-z_][\w.]*)\((?P<args>[^`]*)\)`", re.S)


def _target(name: str) -> Any:
    """The function a dotted name in the prose stands for, or None if it is not ours."""
    head, *rest = name.split(".")
    if head in RECEIVERS:
        head = RECEIVERS[head]
    try:
        obj = resolve(head)
    except LookupError:
        return None
    for part in rest:
        if not hasattr(obj, part):
            raise AttributeError(f"{name}: {obj!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    return obj


def check_written_signature(name: str, args: str) -> str | None:
    """Compare a signature or call written in the prose with the code; the problem, or None.

    ``Speaker(engine=None, *, voice=None, ...)`` (with a bare ``*``) is a signature: its names,
    their order and kinds, and the defaults written must be the real ones (a default may be
    left out); a trailing ``...`` allows the rest to be left out, else every parameter must be
    written. Anything else, such as
    ``StartPolicy.fixed(0.15)`` or ``player.play(source, format="pcm")``, is a call: it must
    bind to the real signature. Empty parentheses name the function (``wav_header()``).
    """
    try:
        target = _target(name)
    except AttributeError as exc:
        return str(exc)
    if target is None:
        return None
    try:
        real = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    params = [p for p in real.parameters.values() if p.name not in ("self", "cls")]
    text = " ".join(args.split())
    partial = text.endswith("...") and not text.endswith("=...")
    if partial:
        text = text[: -len("...")].rstrip().rstrip(",")
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        call = None
    if isinstance(call, ast.Call):
        if not text:
            return None  # `name()`: the function itself is meant, not a call without arguments
        return _bind(real.replace(parameters=params), call)
    try:
        tree = ast.parse(f"def f({text}): pass")
    except SyntaxError as exc:
        return f"{name}({args}): cannot parse ({exc.msg})"
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef)
    written: list[tuple[str, str, object]] = []
    positional = fn.args.posonlyargs + fn.args.args
    pos_defaults = [None] * (len(positional) - len(fn.args.defaults)) + list(fn.args.defaults)
    for arg, default in zip(positional, pos_defaults, strict=True):
        written.append(("positional", arg.arg, default))
    for arg, default in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True):
        written.append(("keyword", arg.arg, default))
    expected = [
        (
            "keyword" if p.kind is inspect.Parameter.KEYWORD_ONLY else "positional",
            p.name,
            p.default,
        )
        for p in params
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if len(written) > len(expected) or (not partial and len(written) != len(expected)):
        names = [n for _, n, _ in expected]
        return f"{name}: written with {[n for _, n, _ in written]}, the code has {names}"
    # A partial signature (``...``) is compared on the parameters it writes.
    pairs = zip(written, expected[: len(written)], strict=True)
    for (kind, pname, default), (real_kind, real_name, real_default) in pairs:
        if (kind, pname) != (real_kind, real_name):
            return f"{name}: {kind} {pname!r} written where the code has {real_kind} {real_name!r}"
        if default is None:
            continue  # a default may be left out (shorthand); a written one must be right
        value = ast.literal_eval(default)
        if value != real_default:
            return f"{name}: {pname}={value!r} written, the default is {real_default!r}"
    return None


def written_signatures(text: str) -> list[tuple[str, str, int]]:
    """``(name, args, line)`` of every ``name(args)`` code span of a page (may span lines)."""
    return [
        (m.group("name"), m.group("args"), text.count("\n", 0, m.start()) + 1)
        for m in _SPAN.finditer(text)
    ]
