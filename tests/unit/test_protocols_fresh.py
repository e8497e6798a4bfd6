"""The generated protobuf code matches the .proto sources (regenerate with scripts/genproto.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "src" / "cocoon" / "protocols" / "gen"


def _genproto() -> object:
    spec = importlib.util.spec_from_file_location("genproto", ROOT / "scripts" / "genproto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["genproto"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    genproto = _genproto()
    written = genproto.generate(tmp_path)  # type: ignore[attr-defined]
    fresh = {p.name: p.read_bytes() for p in written}
    committed = {p.name: p.read_bytes() for p in GEN.glob("*_pb2.py*")}
    assert sorted(fresh) == sorted(committed), "run: python scripts/genproto.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code {stale}: run python scripts/genproto.py"


def test_every_proto_has_generated_code() -> None:
    protos = {p.stem for p in (ROOT / "src/cocoon/protocols/proto").glob("*.proto")}
    generated = {p.name.removesuffix("_pb2.py") for p in GEN.glob("*_pb2.py")}
    assert protos == generated
