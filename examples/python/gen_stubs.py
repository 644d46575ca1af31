#!/usr/bin/env python3
"""Generate the Python gRPC stubs of Syncline's ledger API from the project's own proto files.

    python3 examples/python/gen_stubs.py OUT_DIR

writes `syncline/ledger/v1/*_pb2.py` and `*_pb2_grpc.py` under OUT_DIR (put OUT_DIR on
sys.path). It uses `python3 -m grpc_tools.protoc` (pip package grpcio-tools) when that can
compile the protos, else `protoc` with the `grpc_python_plugin` (Debian: protobuf-compiler
and protobuf-compiler-grpc; Debian's python3-grpc-tools bundles a protoc too old for proto3
`optional` fields).
"""

import glob
import os
import shutil
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PROTO = os.path.join(ROOT, "proto")


class StubError(Exception):
    """The stubs could not be generated (the message says why and what to install)."""


def generate(out_dir):
    """Generate the stubs into out_dir (created if needed); returns out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    protos = sorted(glob.glob(os.path.join(PROTO, "syncline", "ledger", "v1", "*.proto")))
    if not protos:
        raise StubError(f"no ledger API protos under {PROTO}")
    rel = [os.path.relpath(p, PROTO) for p in protos]
    attempts = []
    try:
        import grpc_tools  # noqa: F401  (only whether it is there)

        attempts.append([sys.executable, "-m", "grpc_tools.protoc"])
    except ImportError:
        pass
    protoc, plugin = shutil.which("protoc"), shutil.which("grpc_python_plugin")
    if protoc and plugin:
        attempts.append([protoc, f"--plugin=protoc-gen-grpc_python={plugin}"])
    if not attempts:
        raise StubError(
            "cannot generate gRPC stubs: install grpcio-tools (pip install grpcio grpcio-tools) "
            "or protoc with the gRPC Python plugin (apt-get install protobuf-compiler protobuf-compiler-grpc)"
        )
    errors = []
    for compiler in attempts:
        cmd = compiler + ["-I", PROTO, f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"] + rel
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0:
            # Packages, so that `syncline.ledger.v1` imports (and the stubs' own imports) work.
            for d in ["syncline", os.path.join("syncline", "ledger"), os.path.join("syncline", "ledger", "v1")]:
                open(os.path.join(out_dir, d, "__init__.py"), "a").close()
            return out_dir
        errors.append(f"{' '.join(compiler)}: {r.stderr.strip().splitlines()[0] if r.stderr.strip() else r.returncode}")
    raise StubError("cannot generate gRPC stubs: " + "; ".join(errors))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gen_stubs.py OUT_DIR")
    try:
        print(generate(sys.argv[1]))
    except StubError as e:
        sys.exit(f"error: {e}")
