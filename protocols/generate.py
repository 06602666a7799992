"""Generate the Python code for every ``.proto`` under ``protocols/fednode/v1``.

Usage::

    python protocols/generate.py           # regenerate in place
    python protocols/generate.py --check   # exit 1 if the committed code differs

The generated ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` files are
committed so that installing fednode needs no protobuf compiler. ``--check``
runs in ``make test`` so that a proto edit without regeneration fails CI.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protocols" / "fednode" / "v1"
_GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _generate(out_dir: Path) -> list[Path]:
    protos = sorted(PROTO_DIR.glob("*.proto"))
    include = str(Path(protoc.__file__).resolve().parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(ROOT)) for p in protos),
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    generated = out_dir / "protocols" / "fednode" / "v1"
    return sorted(p for p in generated.iterdir() if p.name.endswith(_GENERATED_SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = _generate(Path(tmp))
        committed = sorted(p for p in PROTO_DIR.iterdir() if p.name.endswith(_GENERATED_SUFFIXES))
        if options.check:
            stale = [
                f.name
                for f in files
                if not (PROTO_DIR / f.name).exists() or not filecmp.cmp(f, PROTO_DIR / f.name)
            ]
            extra = sorted({p.name for p in committed} - {f.name for f in files})
            if stale or extra:
                print(f"generated protobuf code is stale: {stale + extra}", file=sys.stderr)
                print("hint: run 'python protocols/generate.py' and commit", file=sys.stderr)
                return 1
            print(f"generated protobuf code is current ({len(files)} files)")
            return 0
        for old in committed:
            old.unlink()
        for f in files:
            shutil.copyfile(f, PROTO_DIR / f.name)
        print(f"wrote {len(files)} files to {PROTO_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
