"""Protocol definitions: .proto sources in `proto/`, code generated from them in `gen/`.

Generated code is never edited by hand: run `python scripts/genproto.py` after changing a .proto.
`tests/unit/test_protocols_fresh.py` fails when `gen/` is stale.
"""
