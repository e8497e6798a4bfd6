"""Who may import whom, read from the source with `ast` (nothing here imports the modules).

Rules that hold the layers apart:
- the guest's room: no host module imports `cocoon.agent`; what both sides need lives in
  `cocoon.linux`, which imports only the standard library;
- the guest image: the modules it carries (AGENT_PATHS) import only the standard library,
  protobuf, python3-seccomp and each other, never the host side (QEMU, pyroute2, the sandbox,
  the runtime, ...): the guest has none of it;
- entry points are leaves: a process's entry module (`python -m ...`, a console script, the
  guest's init) is run, never imported, so importing a helper never drags in a whole process;
- one agent client: on the host, only `cocoon.sandbox.agentclient` builds the agent's requests
  (`agent_pb2.<X>Request(...)`, `health_pb2...`, `guest_pb2...`); everything else calls its typed
  methods (the guest's own code, which serves those requests, is exempt).
Only src/cocoon is checked: tests and benchmarks drive entry points and agent code in-process.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = SRC / "cocoon"

# Process entry points: run as processes, never imported. test_entry_points_are_listed keeps
# this set complete.
ENTRY_POINTS = frozenset({
    "cocoon.cli.main",         # console script `cocoon`
    "cocoon.shim.main",        # console script `containerd-shim-cocoon-v2` (and `python -m`)
    "cocoon.shim.daemon",      # `python -m cocoon.shim.daemon`, started by shim.main
    "cocoon.sandbox.monitor",  # `python -m cocoon.sandbox.monitor`, started by sandbox.launcher
    "cocoon.agent.main",       # the guest's PID 1, run by the init text of guest/image.py
    "cocoon.runtime.shimproc",  # `python -I -m cocoon.runtime.shimproc`, by runtime.shim
})

# Files that launch an entry point and so may import exactly it. (A package's own __main__.py
# may import its package's entry module too.) guest/image.py writes the guest's /init: a Python
# program run by the guest's interpreter, never the host's, that does
# `from cocoon.agent.main import main`. That text is the only place the host side names the
# agent's code as an import; the host process never imports it. (The build's smoke test names
# agent modules as plain strings for the image's own interpreter: not imports, not checked.)
LAUNCHERS: dict[str, frozenset[str]] = {
    "src/cocoon/guest/image.py": frozenset({"cocoon.agent.main"}),
}

# Packages of the host side only; a guest module importing anything else of cocoon that the
# image does not carry is refused as well.
HOST_ONLY = ("cocoon.sandbox", "cocoon.runtime", "cocoon.cli", "cocoon.shim",
             "cocoon.hypervisor", "cocoon.network", "cocoon.guest", "cocoon.template")
HOST_THIRD_PARTY = ("pyroute2", "qemu")
# what the guest image has besides the standard library: protobuf (google.protobuf and its upb
# extension) and Debian's python3-seccomp
GUEST_THIRD_PARTY = ("google", "seccomp")

# the agent's API (its request messages are built by AGENT_CLIENT only, on the host side)
AGENT_API = frozenset(f"cocoon.protocols.gen.{name}" for name in ("agent_pb2", "health_pb2",
                                                                  "guest_pb2"))
AGENT_CLIENT = "cocoon.sandbox.agentclient"

# an import statement inside a string: code a file writes out for another interpreter
_EMBEDDED_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\s|import\s+([\w.]+))", re.M)

Sources = list[tuple[Path, str]]


@dataclass(frozen=True)
class Import:
    path: str       # relative to the repository
    line: int
    module: str     # what is imported: `a.b.c` for `import a.b.c` and for `from a.b import c`
    statement: str  # as written, for the message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.statement}"

    @property
    def embedded(self) -> bool:
        """An import statement in a string literal (code written out for another program)."""
        return self.statement.startswith("text ")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    base = package[:len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _is_import_call(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def imports_of(path: Path, text: str) -> Iterator[Import]:
    """Every import in a file: statements anywhere (functions and TYPE_CHECKING blocks too),
    `importlib.import_module(...)` and `__import__(...)` of a literal name, and import
    statements written in string literals."""
    rel = str(path.relative_to(ROOT))
    for node in ast.walk(ast.parse(text, filename=rel)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(rel, node.lineno, alias.name, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(path, node)
            shown = f"from {'.' * node.level}{node.module or ''} import "
            for alias in node.names:
                yield Import(rel, node.lineno, base if alias.name == "*" else
                             f"{base}.{alias.name}", shown + alias.name)
        elif isinstance(node, ast.Call) and node.args and _is_import_call(node.func) \
                and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            yield Import(rel, node.lineno, node.args[0].value,
                         f"{ast.unparse(node.func)}({node.args[0].value!r})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in _EMBEDDED_IMPORT.finditer(node.value):
                yield Import(rel, node.lineno, match.group(1) or match.group(2),
                             f"text {match.group(0).strip()!r}")


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def source_files(base: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts)


def read(files: list[Path]) -> Sources:
    return [(path, path.read_text()) for path in files]


def agent_paths() -> tuple[str, ...]:
    """AGENT_PATHS of guest/inputs.py, read from its source."""
    tree = ast.parse((PACKAGE / "guest" / "inputs.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and node.target.id == "AGENT_PATHS" and node.value is not None:
            value = ast.literal_eval(node.value)
            assert isinstance(value, tuple)
            return tuple(str(v) for v in value)
    raise AssertionError("guest/inputs.py has no `AGENT_PATHS: tuple[str, ...] = (...)`")


def guest_files() -> list[Path]:
    files: list[Path] = []
    for name in agent_paths():
        root = PACKAGE / name
        files.extend([root] if root.is_file() else source_files(root))
    return sorted(files)


def _launched(imp: Import, entry: str) -> bool:
    """`imp` is an import of `entry` by a file that launches it."""
    return any(within(imp.module, m) and within(m, entry) for m in LAUNCHERS.get(imp.path, ()))


def agent_violations(files: Sources) -> list[str]:
    """Outside cocoon/agent nothing imports cocoon.agent."""
    return [f"{imp}: host code may not import the guest agent (cocoon.agent); move what both "
            "sides use to cocoon.linux"
            for path, text in files if not path.is_relative_to(PACKAGE / "agent")
            for imp in imports_of(path, text)
            if within(imp.module, "cocoon.agent") and not _launched(imp, "cocoon.agent")]


def guest_violations(files: Sources, carried: set[str]) -> list[str]:
    """What the image carries imports the standard library, protobuf, seccomp and itself."""
    problems: list[str] = []
    for path, text in files:
        for imp in imports_of(path, text):
            if imp.embedded:
                continue
            top = imp.module.split(".")[0]
            if top == "cocoon":
                host = next((p for p in HOST_ONLY if within(imp.module, p)), None)
                if host is not None:
                    problems.append(f"{imp}: the guest image carries this file, and {host} is "
                                    "host-only")
                elif not any(within(imp.module, m) or within(m, imp.module) for m in carried):
                    problems.append(f"{imp}: the guest image carries this file but not that "
                                    "module (AGENT_PATHS in guest/inputs.py)")
            elif top in HOST_THIRD_PARTY:
                problems.append(f"{imp}: the guest image carries this file, and {top} is "
                                "host-only")
            elif top not in sys.stdlib_module_names and top not in GUEST_THIRD_PARTY:
                problems.append(f"{imp}: the guest image has only the standard library, "
                                f"protobuf and seccomp, not {top}")
    return problems


def linux_violations(files: Sources) -> list[str]:
    """cocoon.linux is neutral ground: the standard library and itself only."""
    return [f"{imp}: cocoon.linux may import only the standard library and cocoon.linux"
            for path, text in files for imp in imports_of(path, text)
            if not imp.embedded and imp.module.split(".")[0] not in sys.stdlib_module_names
            and not within(imp.module, "cocoon.linux")]


def entry_violations(files: Sources) -> list[str]:
    """Nothing imports an entry module but the entry module's own launchers."""
    problems: list[str] = []
    for path, text in files:
        for imp in imports_of(path, text):
            entry = next((e for e in ENTRY_POINTS if within(imp.module, e)), None)
            if entry is None or module_name(path) == entry or _launched(imp, entry):
                continue
            if path.name == "__main__.py" \
                    and entry.rpartition(".")[0] == module_name(path).rpartition(".")[0]:
                continue
            problems.append(f"{imp}: {entry} is a process entry point; move what other "
                            "modules need out of it")
    return problems


def _agent_api_names(path: Path, tree: ast.AST) -> tuple[set[str], set[str]]:
    """The names a file binds to the agent API's modules (`agent_pb2`, an alias) and to their
    request classes (`from ...agent_pb2 import StartContainerRequest`)."""
    modules = {name.rpartition(".")[2] for name in AGENT_API}
    classes: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _absolute(path, node)
            for alias in node.names:
                bound = alias.asname or alias.name
                if f"{base}.{alias.name}" in AGENT_API:
                    modules.add(bound)
                elif base in AGENT_API and alias.name.endswith("Request"):
                    classes.add(bound)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in AGENT_API and alias.asname:
                    modules.add(alias.asname)
    return modules, classes


def request_violations(files: Sources) -> list[str]:
    """On the host side, only the agent client constructs the agent's request messages."""
    problems: list[str] = []
    for path, text in files:
        if path.is_relative_to(PACKAGE / "agent") or module_name(path) == AGENT_CLIENT:
            continue
        tree = ast.parse(text, filename=str(path))
        modules, classes = _agent_api_names(path, tree)
        calls = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Call)),
                       key=lambda n: (n.lineno, n.col_offset))
        for node in calls:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr.endswith("Request"):
                owner = ast.unparse(func.value)
                built = owner in modules or owner in AGENT_API
            else:
                built = isinstance(func, ast.Name) and func.id in classes
            if built:
                problems.append(
                    f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(func)}(...): only "
                    f"{AGENT_CLIENT} builds the agent's requests; call a method of its "
                    "AgentClient (and add one there for a new call)")
    return problems


def _report(problems: list[str]) -> str:
    return "\n" + "\n".join(dict.fromkeys(problems))


def test_host_code_does_not_import_the_agent() -> None:
    problems = agent_violations(read(source_files()))
    assert not problems, _report(problems)


def test_guest_code_imports_nothing_of_the_host() -> None:
    files = guest_files()
    assert PACKAGE / "agent" / "service.py" in files and PACKAGE / "linux" / "rtnl.py" in files
    problems = guest_violations(read(files), {module_name(p) for p in files})
    assert not problems, _report(problems)


def test_the_linux_package_is_neutral_and_in_the_guest_image() -> None:
    assert "linux" in agent_paths()
    problems = linux_violations(read(source_files(PACKAGE / "linux")))
    assert not problems, _report(problems)


def test_entry_points_are_leaves() -> None:
    problems = entry_violations(read(source_files()))
    assert not problems, _report(problems)


def test_only_the_agent_client_builds_the_agents_requests() -> None:
    files = read(source_files())
    assert any(module_name(p) == AGENT_CLIENT for p, _ in files)
    problems = request_violations(files)
    assert not problems, _report(problems)


def test_entry_points_are_listed() -> None:
    """ENTRY_POINTS holds every console script, every `if __name__ == "__main__"` module and
    every module started with `python -m`, and nothing else."""
    found: set[str] = set()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    found.update(target.partition(":")[0] for target in scripts.values())
    for path in source_files():
        text = path.read_text()
        if re.search(r"^if __name__ == .__main__.:", text, re.M):
            found.add(module_name(path))
        found.update(re.findall(r'"-m",\s*"(cocoon[\w.]*)"', text))
    found.update(m for launched in LAUNCHERS.values() for m in launched)
    assert found == ENTRY_POINTS, (f"not in ENTRY_POINTS: {sorted(found - ENTRY_POINTS)}; "
                                   f"no entry point: {sorted(ENTRY_POINTS - found)}")


# --- the checker itself, on made-up sources --------------------------------------------------

@pytest.mark.parametrize(("rel", "text", "message"), [
    ("sandbox/x.py", "from cocoon.agent import syscalls\n",
     "src/cocoon/sandbox/x.py:1: from cocoon.agent import syscalls: host code may not import"),
    ("network/x.py", "import os\n\ndef f():\n    import cocoon.agent.rtnl\n",
     "src/cocoon/network/x.py:4: import cocoon.agent.rtnl: host code"),
    ("cli/x.py", "import importlib\nimportlib.import_module('cocoon.agent.caps')\n",
     "src/cocoon/cli/x.py:2: importlib.import_module('cocoon.agent.caps'): host code"),
    ("guest/x.py", "INIT = '''\nfrom cocoon.agent.main import main\n'''\n",
     "src/cocoon/guest/x.py:1: text 'from cocoon.agent.main import': host code"),
])
def test_the_checker_names_file_and_import_of_an_agent_import(rel: str, text: str,
                                                               message: str) -> None:
    problems = agent_violations([(PACKAGE / rel, text)])
    assert problems and problems[0].startswith(message), problems


@pytest.mark.parametrize(("rel", "text", "message"), [
    ("runtime/x.py", "from cocoon.sandbox import monitor\n",
     "src/cocoon/runtime/x.py:1: from cocoon.sandbox import monitor: cocoon.sandbox.monitor is"),
    ("shim/pod.py", "from cocoon.shim.main import version_text\n",
     "src/cocoon/shim/pod.py:1: from cocoon.shim.main import version_text: cocoon.shim.main"),
    ("sandbox/launcher.py", "from .monitor import remove_vm_dir\n",
     "src/cocoon/sandbox/launcher.py:1: from .monitor import remove_vm_dir: cocoon.sandbox.mon"),
])
def test_the_checker_names_file_and_import_of_an_entry_import(rel: str, text: str,
                                                               message: str) -> None:
    problems = entry_violations([(PACKAGE / rel, text)])
    assert problems and problems[0].startswith(message), problems


def test_an_entry_module_may_be_imported_by_its_launchers_only() -> None:
    init = "INIT = '''\nfrom cocoon.agent.main import main\n'''\n"
    assert entry_violations([(PACKAGE / "shim" / "__main__.py",
                              "from cocoon.shim.main import entry\n")]) == []
    assert entry_violations([(PACKAGE / "guest" / "image.py", init)]) == []
    assert agent_violations([(PACKAGE / "guest" / "image.py", init)]) == []
    assert entry_violations([(PACKAGE / "guest" / "image.py",
                              "from cocoon.sandbox.monitor import main\n")]) != []
    assert agent_violations([(PACKAGE / "guest" / "image.py",
                              "from cocoon.agent.rootfs import secure_join\n")]) != []


def test_the_guest_rule_refuses_host_and_unknown_imports() -> None:
    text = ("import pyroute2\nfrom cocoon.network import tap\nimport yaml\n"
            "from cocoon.linux import rtnl\nimport google.protobuf\nimport os\n"
            "from cocoon.nothere import x\n")
    problems = guest_violations([(PACKAGE / "agent" / "x.py", text)],
                                {"cocoon.linux", "cocoon.linux.rtnl"})
    assert [p.split(": ")[0] for p in problems] == [
        "src/cocoon/agent/x.py:1", "src/cocoon/agent/x.py:2", "src/cocoon/agent/x.py:3",
        "src/cocoon/agent/x.py:7"]
    assert problems[0] == ("src/cocoon/agent/x.py:1: import pyroute2: the guest image carries "
                           "this file, and pyroute2 is host-only")
    assert problems[1].startswith("src/cocoon/agent/x.py:2: from cocoon.network import tap: ")
    assert "cocoon.network is host-only" in problems[1]
    assert problems[2].endswith("not yaml")
    assert "not that module (AGENT_PATHS" in problems[3]


@pytest.mark.parametrize(("rel", "text", "where"), [
    ("runtime/x.py", "from cocoon.protocols.gen import agent_pb2\n"
     "r = agent_pb2.StartContainerRequest(container_id='c')\n", "2: agent_pb2.StartContainer"),
    ("shim/x.py", "from cocoon.protocols.gen import health_pb2 as h\n\n\ndef f():\n"
     "    return h.CheckRequest()\n", "5: h.CheckRequest(...)"),
    ("template/x.py", "from cocoon.protocols.gen.guest_pb2 import WarmUpRequest as W\nW()\n",
     "2: W(...)"),
    ("cli/x.py", "import cocoon.protocols.gen.agent_pb2\n"
     "cocoon.protocols.gen.agent_pb2.GetOOMEventRequest()\n", "2: cocoon.protocols.gen"),
    ("sandbox/x.py", "from ..protocols.gen import agent_pb2 as pb\npb.WaitProcessRequest()\n",
     "2: pb.WaitProcessRequest(...)"),
])
def test_the_checker_names_file_and_line_of_a_request_built_outside_the_client(
        rel: str, text: str, where: str) -> None:
    problems = request_violations([(PACKAGE / rel, text)])
    assert len(problems) == 1 and problems[0].startswith(f"src/cocoon/{rel}:{where}"), problems
    assert "only cocoon.sandbox.agentclient builds the agent's requests" in problems[0]


def test_the_request_rule_lets_messages_the_client_and_the_guest_be() -> None:
    text = "from cocoon.protocols.gen import agent_pb2\nagent_pb2.StartContainerRequest()\n"
    assert request_violations([(PACKAGE / "sandbox" / "agentclient.py", text)]) == []
    assert request_violations([(PACKAGE / "agent" / "service.py", text)]) == []
    allowed = ("from cocoon.protocols.gen import agent_pb2, monitor_pb2\n"
               "agent_pb2.Storage(driver='virtio-fs')\nmonitor_pb2.StatusRequest()\n"
               "x: agent_pb2.StartContainerRequest | None = None\n")
    assert request_violations([(PACKAGE / "sandbox" / "monitor.py", allowed)]) == []
