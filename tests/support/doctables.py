"""The generated parts of the documentation, and the tool that refreshes them.

Some pages hold blocks generated from the code or from benchmark results, between the markers
``<!-- generated:NAME -->`` and ``<!-- end generated:NAME -->``. `GENERATORS` maps each NAME to
the function that renders it; ``tests/unit/test_docs.py`` fails when a page's block differs from
a fresh rendering, and this module, run as a script, rewrites the blocks::

    .venv/bin/python tests/support/doctables.py          # rewrite the blocks in docs/
    .venv/bin/python tests/support/doctables.py --check  # exit 1 if any block is stale

How the events reference is built: every class in ``streamtts.events.__all__`` is read with
`dataclasses.fields` (names and annotated types, inherited fields included) and its Google-style
docstring (the summary says when it fires; ``Attributes:`` entries describe the fields, looked up
along the MRO so inherited fields keep their base class's description).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"

_BEGIN = "<!-- generated:{name} -->"
_END = "<!-- end generated:{name} -->"


# ------------------------------------------------------------------------------ docstrings


def split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its prose and its ``Attributes:`` entries.

    Args:
        doc: The cleaned docstring (``inspect.getdoc``).

    Returns:
        The prose before ``Attributes:`` (paragraphs joined into single lines) and a mapping of
        attribute name to its description (continuation lines joined).
    """
    prose_lines: list[str] = []
    attributes: dict[str, str] = {}
    current: str | None = None
    in_attributes = False
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            in_attributes = True
            continue
        if not in_attributes:
            prose_lines.append(line)
            continue
        entry = re.match(r"^    (\w+): (.*)$", line)
        if entry:
            current = entry.group(1)
            attributes[current] = entry.group(2).strip()
        elif line.startswith("        ") and current is not None:
            attributes[current] += " " + line.strip()
        elif line.strip():
            in_attributes = False  # another section or prose after the attributes
            prose_lines.append(line)
    paragraphs = [" ".join(p.split()) for p in "\n".join(prose_lines).split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p), attributes


def _rst_to_md(text: str) -> str:
    """Docstring markup to Markdown: ``code`` → `code` (single backticks stay as they are)."""
    return text.replace("``", "`")


def _cell(text: str) -> str:
    return _rst_to_md(text).replace("|", "\\|")


# ------------------------------------------------------------------------------ events


#: Where each family of events comes from (the classes are read from streamtts.events).
_FAMILIES: list[tuple[str, str, str]] = [
    (
        "StreamEvent",
        "Stream events",
        "Found in the data by the format readers (`OggReader`, `OggOpusDecoder`, `WavReader`, "
        "`PcmReader`: their `events` list and `pop_events()`). They have no clock: `offset` is "
        "the byte offset in the input. Through a `Player` they arrive wrapped in `SourceEvent`.",
    ),
    (
        "_PlaybackOnly",
        "Playback events",
        "From `Player.events()`. `time` is `time.monotonic()`, `position` counts the frames "
        "played at the device so far. `Speaker.events()` forwards `Underrun`.",
    ),
    (
        "SentenceEvent",
        "Speaker events",
        "From `Speaker.events()`, about one sentence of one utterance (one `say` or "
        "`say_stream` call).",
    ),
]


def _event_classes() -> list[type[Any]]:
    import streamtts.events as ev

    classes = [getattr(ev, name) for name in ev.__all__]
    return sorted(classes, key=lambda cls: inspect.getsourcelines(cls)[1])  # as defined


def _family(cls: type[Any]) -> str:
    import streamtts.events as ev

    if issubclass(cls, ev.StreamEvent):
        return "StreamEvent"
    if issubclass(cls, ev.SentenceEvent):
        return "SentenceEvent"
    return "_PlaybackOnly"


def _describe_field(cls: type[Any], name: str) -> str:
    for klass in cls.__mro__:
        doc = klass.__dict__.get("__doc__")
        if not doc:
            continue
        _, attributes = split_docstring(inspect.cleandoc(doc))
        if name in attributes:
            return attributes[name]
    return ""


def _own_summary(cls: type[Any]) -> str:
    doc = cls.__dict__.get("__doc__") or ""
    prose, _ = split_docstring(inspect.cleandoc(doc))
    return prose


def _base_name(cls: type[Any]) -> str:
    base = cls.__mro__[1]
    return base.__name__ if not base.__name__.startswith("_") else ""


def render_events() -> str:
    """The events reference: a summary table per family, then every class with its fields."""
    classes = _event_classes()
    out: list[str] = []
    for key, title, intro in _FAMILIES:
        members = [c for c in classes if _family(c) == key]
        out += [f"## {title}", "", intro, "", "| Event | Fires when |", "|---|---|"]
        for cls in members:
            first = _own_summary(cls).split("\n\n")[0]
            out.append(f"| [`{cls.__name__}`](#{cls.__name__.lower()}) | {_cell(first)} |")
        out.append("")
        for cls in members:
            base = _base_name(cls)
            out += [f"### {cls.__name__}", ""]
            if base and base != "object":
                out += [f"*Subclass of `{base}`.*", ""]
            out += [_rst_to_md(_own_summary(cls)), ""]
            fields = dataclasses.fields(cls)
            if fields:
                out += ["| Field | Type | Meaning |", "|---|---|---|"]
                for f in fields:
                    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
                    out.append(f"| `{f.name}` | `{kind}` | {_cell(_describe_field(cls, f.name))} |")
                out.append("")
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------------ errors


def render_error_tree() -> str:
    """The error tree drawn at the top of ``streamtts/errors.py``, as a code block."""
    import streamtts.errors as errors

    doc = errors.__doc__ or ""
    match = re.search(r"```\n(.*?)```", doc, re.S)
    if match is None:
        raise ValueError("streamtts/errors.py no longer draws its tree in a ``` block")
    return "```text\n" + match.group(1) + "```\n"


# ------------------------------------------------------------------------------ benchmarks

#: Policies shown in the benchmark tables, in this order, with the name used on the page.
_POLICIES: list[tuple[str, str]] = [
    ("adaptive", "adaptive"),
    ("adaptive_min150ms", "adaptive, 150 ms floor"),
    ("low_latency", "low"),
    ("fixed_0ms", "fixed 0"),
    ("fixed_150ms", "fixed 150 ms"),
    ("fixed_500ms", "fixed 0.5 s"),
    ("fixed_wav150kB", "150 kB WAV"),
]


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def render_policy_traces() -> str:
    """The start-policy benchmark (``benchmarks/results/policy.json``): one row per trace.

    Only the simulated figures, which are deterministic; never the measured call costs.
    """
    data = json.loads((RESULTS / "policy.json").read_text())
    head = "| Trace | Oracle ms | " + " | ".join(label for _, label in _POLICIES) + " |"
    out = [head, "|---|---:|" + "---:|" * len(_POLICIES)]
    for trace in data["traces"]:
        cells = []
        for key, _ in _POLICIES:
            result = trace["policies"].get(key)
            if result is None:
                cells.append("n/a")
                continue
            underruns = result["underruns"]
            noun = "underrun" if underruns == 1 else "underruns"
            silence = f"{result['silence_ms']:.0f} ms"
            mark = f" **({underruns} {noun}, {silence})**" if underruns else ""
            cells.append(_ms(result["start_delay_ms"]) + mark)
        name = f"`{trace['trace']}`: {_cell(trace['description'])}"
        out.append(f"| {name} | {_ms(trace['oracle_delay_ms'])} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def render_policy_jitter() -> str:
    """The jittery-link distributions of ``policy.json``: underruns and start delays."""
    data = json.loads((RESULTS / "policy.json").read_text())
    out = [
        "| Link (draws) | Policy | Traces with underrun | Start delay median / p90 / max ms |",
        "|---|---|---:|---:|",
    ]
    for name, dist in data["jitter_distributions"].items():
        label = f"`{name}`: {_cell(dist['description'])} ({dist['traces']})"
        oracle = dist["oracle_delay_ms"]
        out.append(
            f"| {label} | oracle | – | "
            f"{_ms(oracle['median'])} / {_ms(oracle['p90'])} / {_ms(oracle['max'])} |"
        )
        for key, policy in _POLICIES:
            result = dist.get(key)
            if result is None:
                continue
            delay = result["start_delay_ms"]
            out.append(
                f"| | {policy} | {result['traces_with_underrun']} | "
                f"{_ms(delay['median'])} / {_ms(delay['p90'])} / {_ms(delay['max'])} |"
            )
    return "\n".join(out) + "\n"


def render_policy_goals() -> str:
    """The goals ``bench_policy.py`` checks for the adaptive policy, met or missed."""
    data = json.loads((RESULTS / "policy.json").read_text())
    goals = data["goals"]
    out = []
    for name, goal in goals.items():
        met = goal.get("met")
        missed = goal.get("missed") or []
        if isinstance(met, list):
            verdict = f"met on {len(met)} traces" + (
                f", missed on {', '.join(f'`{m}`' for m in missed)}" if missed else ""
            )
        else:
            verdict = "met" if met else "**missed**"
        out.append(f"- `{name}`: {verdict}")
    return "\n".join(out) + "\n"


def render_compare() -> str:
    """The side-by-side benchmark (``benchmarks/results/compare.json``): first sound per system
    and trace, with the underruns and silence found in the recording."""
    data = json.loads((RESULTS / "compare.json").read_text())
    runs = {(r["system"], r["trace"]): r for r in data["runs"]}
    traces = list(data["traces"])
    out = [
        "| System | " + " | ".join(f"`{t}`" for t in traces) + " |",
        "|---|" + "---:|" * len(traces),
    ]
    for system, description in data["systems"].items():
        cells = []
        for trace in traces:
            run = runs.get((system, trace))
            if run is None or run.get("error") or run.get("first_sound_s") is None:
                cells.append("n/a" if run is None else "failed")
                continue
            cell = f"{run['first_sound_s']:.2f}"
            if run["underruns"]:
                cell += f" **({run['underruns']} / {run['inserted_silence_ms']:.0f} ms)**"
            cells.append(cell)
        out.append(f"| {_cell(description)} | " + " | ".join(cells) + " |")
    load = data["load_average_before"][0]
    out.append("")
    out.append(
        f"Mode `{data['mode']}`, {data['wall_s']:.0f} s, load average {load:.2f} before the "
        f"run, {data['cpu_count']} cores. Traces: "
        + "; ".join(f"`{k}`: {_cell(v)}" for k, v in data["traces"].items())
        + "."
    )
    return "\n".join(out) + "\n"


def render_longrun() -> str:
    """The long run (``benchmarks/results/longrun.json``)."""
    d = json.loads((RESULTS / "longrun.json").read_text())
    return (
        "| Figure | Value |\n|---|---|\n"
        f"| Audio played ({d['mode']} mode) | {d['audio_s']:.0f} s in {d['links']} chained "
        "links |\n"
        f"| Memory growth after {d['warmup_s']:.0f} s of warm-up | "
        f"{d['rss_growth_after_warmup_mb']:.3f} MB (limit {d['max_growth_mb']:.0f} MB) |\n"
        f"| Peak resident memory | {d['peak_rss_mb']:.1f} MB |\n"
        f"| CPU per second of audio | {d['cpu_per_audio_s']:.4f} s |\n"
        f"| Underruns / device underflows | {d['underruns']} / {d['device_underflows']} |\n"
    )


# ------------------------------------------------------------------------------ blocks

#: Block name → (page under docs/, renderer).
GENERATORS: dict[str, tuple[str, Callable[[], str]]] = {
    "events": ("events.md", render_events),
    "error-tree": ("errors.md", render_error_tree),
    "policy-traces": ("benchmarks.md", render_policy_traces),
    "policy-jitter": ("benchmarks.md", render_policy_jitter),
    "policy-goals": ("benchmarks.md", render_policy_goals),
    "compare": ("benchmarks.md", render_compare),
    "longrun": ("benchmarks.md", render_longrun),
}


def extract_block(text: str, name: str) -> str | None:
    """The content of generated block ``name`` in ``text`` (None if the page has no such block)."""
    begin, end = _BEGIN.format(name=name), _END.format(name=name)
    start = text.find(begin)
    stop = text.find(end)
    if start < 0 or stop < start:
        return None
    return text[start + len(begin) : stop].strip("\n") + "\n"


def replace_block(text: str, name: str, content: str) -> str:
    """``text`` with generated block ``name`` replaced by ``content``."""
    begin, end = _BEGIN.format(name=name), _END.format(name=name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"no generated block {name!r}")
    return text[: start + len(begin)] + "\n" + content.rstrip("\n") + "\n" + text[stop:]


def refresh(check: bool = False) -> list[str]:
    """Rewrite (or, with ``check``, only compare) every generated block; returns stale names."""
    stale = []
    for name, (page, render) in GENERATORS.items():
        path = DOCS / page
        text = path.read_text()
        fresh = render()
        if extract_block(text, name) != fresh:
            stale.append(name)
            if not check:
                path.write_text(replace_block(text, name, fresh))
    return stale


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    names = refresh(check="--check" in sys.argv)
    verb = "stale" if "--check" in sys.argv else "rewritten"
    print(f"{verb}: {', '.join(names) if names else 'none'}")
    sys.exit(1 if names and "--check" in sys.argv else 0)
