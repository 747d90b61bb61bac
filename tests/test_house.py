"""The rules of the house, read from the code itself: which room may import which, where SQL and DSPy internals
may live, what is public, how big a module may grow, and the path one LM call takes.

Rooms are the subpackages of ``dspy_tokens`` (capture, ingest, store, limits, reports, cli, testing) and its
top-level modules (errors, _ids, config, pricing, lifecycle, tracker). The README's "Architecture" section draws them.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dspy
import pytest

import dspy_tokens
from dspy_tokens.capture import ObservedCall
from dspy_tokens.store import UsageRow

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "dspy_tokens"
DISCORD = ROOT / "integrations" / "discord" / "dspy_tokens_discord"
MAX_LINES = 400

#: room -> the rooms it may import (its own room is always allowed).
MAY_IMPORT = {
    "errors": set(),
    "_ids": {"errors"},
    "_metadata": set(),
    "config": {"errors", "_ids"},
    "capture": {"errors", "_ids", "_metadata"},
    "pricing": {"config", "capture", "errors"},
    "store": {"errors", "_ids", "_metadata"},
    "ingest": {"capture", "pricing", "store", "config", "errors", "_ids", "_metadata"},
    "limits": {"config", "pricing", "store", "capture", "errors", "_ids"},
    "reports": {"store", "config", "errors", "_ids", "_metadata"},
    "lifecycle": {"capture", "errors"},
    "otel": {"store", "errors"},  # OpenTelemetry: fed rows by the tracker (on_row), never part of the call path
    "tracker": {"capture", "ingest", "store", "limits", "reports", "config", "pricing", "lifecycle", "errors",
                "_ids"},
    "testing": set(),
    "web": {"dspy_tokens", "reports"},  # a front end: the public face and documented submodules only (below)
}
#: What the CLI and other front ends may use: the package's public face and its documented public submodules.
PUBLIC_MODULES = {"dspy_tokens", "dspy_tokens.store", "dspy_tokens.reports", "dspy_tokens.config",
                  "dspy_tokens.pricing", "dspy_tokens.testing", "dspy_tokens.errors", "dspy_tokens.limits",
                  "dspy_tokens.web", "dspy_tokens.ingest", "dspy_tokens.otel"}
#: The rooms that are front ends of the library: they use only PUBLIC_MODULES and names in dspy_tokens.__all__.
FRONT_ENDS = ("cli", "web")
#: The one place each capture room's import of the others is allowed (limits needs the guard's usage_context).
NARROW = {("limits", "capture"): {"dspy_tokens.capture.context"},
          ("pricing", "capture"): {"dspy_tokens.capture.usage", "dspy_tokens.capture.dspy_internals"}}
#: The one module of each package allowed another library's internals: DSPy's (capture), and discord.py's
#: connection state, whose parsers the Discord testing kit feeds as the gateway would.
INTERNALS_ALLOWED = {"dspy_tokens.capture.dspy_internals", "dspy_tokens_discord.testing.gateway"}
#: Underscore attributes of other libraries' objects that are their public API.
FOREIGN_API = {"_meta", "_asdict", "_fields", "_field_defaults", "_replace", "_make"}
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+(IGNORE\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
                 r"CREATE\s+(TABLE|INDEX|DATABASE)|ALTER\s+TABLE|DROP\s+(TABLE|INDEX))\b", re.IGNORECASE | re.DOTALL)


@dataclass
class Module:
    name: str  # dspy_tokens.store.engine
    path: Path
    tree: ast.Module
    imports: list[tuple[str, tuple[str, ...], int]] = field(default_factory=list)  # (module, names, line)

    @property
    def room(self) -> str:
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 and parts[0] == "dspy_tokens" else parts[0]


def _module_name(path: Path) -> str:
    base = DISCORD.parent if DISCORD in path.parents or path.parent == DISCORD else ROOT
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _load(path: Path) -> Module:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    module = Module(_module_name(path), path, tree)
    package = module.name if path.name == "__init__.py" else module.name.rpartition(".")[0]
    skipped = _type_checking_lines(tree)
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Import):
            module.imports += [(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = tuple(alias.name for alias in node.names)
            submodules = [f"{target}.{name}" for name in names if f"{target}.{name}" in MODULE_NAMES]
            if len(submodules) < len(names):  # "from . import x" imports the submodule x, not the package
                module.imports.append((target, names, node.lineno))
            module.imports += [(sub, (), node.lineno) for sub in submodules]
    return module


MODULE_NAMES = {_module_name(p) for p in [*CORE.rglob("*.py"), *DISCORD.rglob("*.py")]}
MODULES = [_load(p) for p in sorted(CORE.rglob("*.py"))]
DISCORD_MODULES = [_load(p) for p in sorted(DISCORD.rglob("*.py"))]
OURS = {m.name: m for m in MODULES}


def _room_of(target: str) -> str | None:
    if target == "dspy_tokens" or not target.startswith("dspy_tokens."):
        return "dspy_tokens" if target == "dspy_tokens" else None
    return target.split(".")[1]


def _violations(modules, check) -> list[str]:
    return [f"{m.path.relative_to(ROOT)}:{line}: {problem}" for m in modules for line, problem in check(m)]


class TestImports:
    def test_each_room_imports_only_what_the_house_allows(self):
        """The table of MAY_IMPORT holds for every import (store imports only errors and the id rule; capture never
        imports store, limits or reports; reports and limits never import each other; testing imports nothing of
        ours)."""
        def check(m: Module):
            if m.room in ("__init__", "__main__", "dspy_tokens", "cli"):
                return

            for target, _, line in m.imports:
                room = _room_of(target)
                if room is None or room == m.room:
                    continue
                if room not in MAY_IMPORT[m.room]:
                    yield line, f"{m.room} imports {target}"
                narrow = NARROW.get((m.room, room))
                if narrow is not None and target not in narrow:
                    yield line, f"{m.room} may import only {sorted(narrow)} of {room}, not {target}"
        assert _violations(MODULES, check) == []

    @pytest.mark.parametrize("front_end", FRONT_ENDS)
    def test_front_ends_use_only_public_names_and_documented_submodules(self, front_end):
        """The command line and the web app are clients of the library: they wire nothing of their own (the web
        app reads through the report and limits API, never SQL or the store)."""
        def check(m: Module):
            if m.room != front_end:
                return
            for target, names, line in m.imports:
                if _room_of(target) in (None, front_end):
                    continue
                if target not in PUBLIC_MODULES:
                    yield line, f"{front_end} imports {target}"
                private = set(names) - set(dspy_tokens.__all__) - {"__version__"}
                if target == "dspy_tokens" and private:
                    yield line, f"{front_end} imports {sorted(private)} from dspy_tokens"
        assert _violations(MODULES, check) == []

    def test_only_the_cli_imports_the_web_app(self):
        """No room of the library depends on the web layer (it is an optional extra)."""
        def check(m: Module):
            if m.room in ("web", "cli"):
                return
            for target, _, line in m.imports:
                if _room_of(target) == "web":
                    yield line, f"{m.room} imports {target}"
        assert _violations(MODULES, check) == []

    def test_the_discord_package_uses_only_the_public_api(self):
        """dspy_tokens_discord imports only names in dspy_tokens.__all__ (and dspy_tokens.testing)."""
        def check(m: Module):
            for target, names, line in m.imports:
                if target.split(".")[0] in ("peewee", "playhouse"):
                    yield line, f"imports {target}"
                if target.startswith("dspy_tokens_discord") or _room_of(target) is None:
                    continue
                if target == "dspy_tokens" and not set(names) <= set(dspy_tokens.__all__):
                    yield line, f"imports {sorted(set(names) - set(dspy_tokens.__all__))} from dspy_tokens"
                elif target not in ("dspy_tokens", "dspy_tokens.testing"):
                    yield line, f"imports {target}"
        assert _violations(DISCORD_MODULES, check) == []

    def test_private_modules_and_names_stay_inside_their_room(self):
        """No ``from x import _y`` across modules; a room's private modules (store/_db, store/_sql) are imported
        only inside it; ``_ids`` and ``_metadata`` (the one id rule, the one metadata rule) are the package's own."""
        def check(m: Module):
            for target, names, line in m.imports:
                if _room_of(target) is None:
                    continue
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    yield line, f"imports private names {private} from {target}"
                last = target.rsplit(".", 1)[-1]
                if last.startswith("_") and last not in ("_ids", "_metadata") and _room_of(target) != m.room:
                    yield line, f"imports {target}, private to {_room_of(target)}"
        assert _violations(MODULES + DISCORD_MODULES, check) == []

    def test_no_module_reads_another_modules_private_attributes(self):
        """``obj._name`` is read only where ``_name`` is defined (the module's own privates), for a few
        libraries' underscore APIs (NamedTuple's ``_asdict``, Peewee's ``_meta``), or in INTERNALS_ALLOWED."""
        def defined(tree):
            names = set()
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(node.name)
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    names.add(node.attr)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
            return names

        def check(m: Module):
            own = defined(m.tree)
            for node in ast.walk(m.tree):
                if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                    continue
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                if node.attr in own or node.attr in FOREIGN_API:
                    continue
                if m.name in INTERNALS_ALLOWED:
                    continue
                yield node.lineno, f"reads {ast.unparse(node)}"
        assert _violations(MODULES + DISCORD_MODULES, check) == []

    @pytest.mark.parametrize("modules", [MODULES, DISCORD_MODULES], ids=["dspy_tokens", "dspy_tokens_discord"])
    def test_no_import_cycles(self, modules):
        """The modules form no cycle (function-level imports count; TYPE_CHECKING imports do not)."""
        names = {m.name for m in modules}
        graph = {m.name: {t for t, _, _ in m.imports if t in names and t != m.name} for m in modules}
        state: dict[str, int] = {}
        cycles: list[list[str]] = []

        def visit(node: str, stack: list[str]) -> None:
            state[node] = 1
            for nxt in sorted(graph[node]):
                if state.get(nxt) == 1:
                    cycles.append(stack[stack.index(nxt):] + [nxt])
                elif nxt not in state:
                    visit(nxt, stack + [nxt])
            state[node] = 2

        for name in sorted(graph):
            if name not in state:
                visit(name, [name])
        assert cycles == []


class TestPlacement:
    def test_sql_and_peewee_live_only_in_the_store(self):
        """Nothing outside store/ holds SQL text, calls execute_sql or imports peewee/playhouse."""
        def check(m: Module):
            if m.room == "store":
                return
            for node in ast.walk(m.tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                    yield node.lineno, f"SQL text {node.value[:40]!r}"
                elif isinstance(node, ast.Attribute) and node.attr in ("execute_sql", "cursor", "atomic"):
                    yield node.lineno, f"calls .{node.attr}"
            for target, _, line in m.imports:
                if target.split(".")[0] in ("peewee", "playhouse", "psycopg2", "pymysql", "sqlite3"):
                    yield line, f"imports {target}"
        assert _violations(MODULES + DISCORD_MODULES, check) == []

    def test_only_capture_imports_dspy_internals(self):
        """``dspy.<anything>`` is imported only by capture/dspy_internals.py; everyone else uses ``dspy``'s public
        names (so a DSPy upgrade is checked in one file)."""
        def check(m: Module):
            if m.name == "dspy_tokens.capture.dspy_internals":
                return
            for target, _, line in m.imports:
                if target.startswith("dspy."):
                    yield line, f"imports {target}"
        assert _violations(MODULES + DISCORD_MODULES, check) == []

    def test_no_module_is_over_400_lines(self):
        """Small modules with one job each."""
        big = {str(m.path.relative_to(ROOT)): len(m.path.read_text().splitlines()) for m in MODULES + DISCORD_MODULES}
        assert {path: lines for path, lines in big.items() if lines > MAX_LINES} == {}


class TestPublicSurface:
    def test_all_is_exactly_the_documented_public_surface(self):
        """``dspy_tokens.__all__`` equals the names the README's "Public API" section documents."""
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        section = readme.split("<!-- public-api -->", 2)[1]
        documented = set(re.findall(r"^\| `(\w+)`", section, flags=re.MULTILINE))
        assert set(dspy_tokens.__all__) == documented
        assert len(dspy_tokens.__all__) == len(set(dspy_tokens.__all__))

    def test_every_public_name_resolves_and_public_types_are_exported(self):
        """Each name in ``__all__`` imports; the types public methods return are among them."""
        for name in dspy_tokens.__all__:
            assert getattr(dspy_tokens, name) is not None
        for name in ("LimitDecision", "Summary", "Group", "Totals", "CleanupResult", "StorageError", "WriterStats"):
            assert name in dspy_tokens.__all__
        assert re.fullmatch(r"\d+\.\d+\.\d+", dspy_tokens.__version__)

    def test_importing_the_package_and_the_cli_does_not_import_dspy(self):
        """``import dspy_tokens`` and the CLI's ``--help`` stay fast: DSPy is loaded on first real use, rich when
        a table or a progress bar is drawn."""
        code = ("import sys, dspy_tokens, dspy_tokens.cli; "
                "assert 'dspy' not in sys.modules, 'dspy imported'; assert 'rich' not in sys.modules, 'rich imported'; "
                "print(dspy_tokens.__version__)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == dspy_tokens.__version__

    def test_python_m_dspy_tokens_shows_the_command_line(self):
        """``python -m dspy_tokens --help`` lists the commands."""
        done = subprocess.run([sys.executable, "-m", "dspy_tokens", "--help"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert "Usage: dspy-tokens" in done.stdout and "report" in done.stdout and "db" in done.stdout


# -- the path of one LM call ----------------------------------------------------------------------------------
class _PathTrace:
    """Which of our modules run code, and which receive the call's own data, from ``on_lm_end`` until the row
    is committed: a profile hook in every thread (set before the tracker's threads start)."""

    def __init__(self):
        self.armed = False
        self.inside_on_lm_end = threading.local()
        self.executed: set[str] = set()
        self.carried: set[str] = set()
        self.call: ObservedCall | None = None

    def hook(self, frame, event, arg):
        if event != "call" and event != "return":
            return
        filename = frame.f_code.co_filename
        if not filename.startswith(str(CORE)) or filename.startswith(str(CORE / "testing")):
            return  # not ours, or the fake provider answering on its own threads
        module = str(Path(filename).relative_to(ROOT))
        main = threading.current_thread() is threading.main_thread()
        if main and frame.f_code.co_name == "on_lm_end" and module.endswith("capture/callback.py"):
            self.inside_on_lm_end.value = event == "call"
            if event == "call" and self.armed:
                self.executed.add(module)
            return
        if event != "call" or not self.armed or (main and not getattr(self.inside_on_lm_end, "value", False)):
            return
        self.executed.add(module)
        for value in frame.f_locals.values():
            if self._is_ours(value):
                self.carried.add(module)
                break

    def _is_ours(self, value) -> bool:
        if isinstance(value, ObservedCall):
            self.call = self.call or value
            return value is self.call
        if isinstance(value, UsageRow):
            return self.call is not None and value.call_uuid == self.call.call_uuid
        if isinstance(value, (list, tuple)) and value and not isinstance(value, UsageRow):
            return any(self._is_ours(v) for v in value[:50] if isinstance(v, (ObservedCall, UsageRow)))
        return False


def test_one_lm_call_reaches_its_row_through_six_modules_without_the_tracker(make_tracker, sqlite_url, server):
    """From ``on_lm_end`` to the committed row, the call's data (its ObservedCall, then its UsageRow) passes
    through at most six modules — callback → writer → rows → journal → engine → aggregates — and no code of
    ``tracker.py`` runs on the way (the tracker only put the parts together)."""
    trace = _PathTrace()
    threading.setprofile(trace.hook)
    sys.setprofile(trace.hook)
    try:
        tracker = make_tracker(sqlite_url)
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=server.lm(), callbacks=[tracker]):
            predict(question="warm up: schema, prices, connection")
            assert tracker.flush(30)
            trace.armed = True
            predict(question="the traced call")
            assert tracker.flush(30)
            trace.armed = False
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    assert trace.call is not None, "the traced call was not seen"
    assert "dspy_tokens/tracker.py" not in trace.executed, sorted(trace.executed)
    path = {"dspy_tokens/capture/callback.py"} | trace.carried  # the callback makes the ObservedCall it hands on
    assert len(path) <= 6
    assert path == {"dspy_tokens/capture/callback.py", "dspy_tokens/ingest/writer.py",
                             "dspy_tokens/ingest/rows.py", "dspy_tokens/ingest/journal.py",
                             "dspy_tokens/store/engine.py", "dspy_tokens/store/aggregates.py"}, sorted(path)
