"""Index a Functions app with the Python worker's own code, as the host would at start.

Run with the interpreter of ``.venv-worker`` (see scripts/worker-index.sh),
never imported by the test-suite: it needs ``azure-functions-runtime``, the
Python 3.13+ worker library, whose loader is what turns the decorators of
``function_app.py`` into function metadata and rejects a function whose
signature does not match its bindings. ``func start`` cannot run here, so
this is the closest we get to the host's own check.

This is the ONLY module that touches the runtime's internal API:
``loader.index_function_app``, ``loader.process_indexed_function``,
``functions.Registry``, ``bindings.meta.load_binding_registry`` and
``utils.validators.validate_script_file_name`` (the calls ``handle_event.worker_init_request`` and
``index_functions`` make when the host starts the worker). The host normally hands the worker its
gRPC message classes; here a stand-in records the fields instead, with the
enum values of FunctionRpc.proto so the worker's comparisons behave the same.

Usage: python worker_index.py APP_DIR
Prints {"ok": true, "functions": [...]} and exits 0, or
{"ok": false, "error": {...}} and exits 1.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any


class _Message:
    """Records the fields a gRPC message would be built from."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields


class _BindingInfo(_Message):
    # BindingInfo.Direction and BindingInfo.DataType in FunctionRpc.proto
    out = 1
    inout = 2
    undefined = 0
    string = 1
    binary = 2
    stream = 3


setattr(_BindingInfo, "in", 0)  # a Python keyword, as in the generated module


class _Protos:
    BindingInfo = _BindingInfo
    RpcFunctionMetadata = _Message
    RpcRetryOptions = _Message


def _plain(value: Any) -> Any:
    """JSON-friendly form of what the worker put into a message."""
    if isinstance(value, _Message):
        return {k: _plain(v) for k, v in value.fields.items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    name = getattr(value, "name", None)  # enums (binding direction, data type)
    return name if isinstance(name, str) else str(value)


def index(app_dir: Path) -> list[dict[str, Any]]:
    from azure_functions_runtime import loader
    from azure_functions_runtime.bindings.meta import load_binding_registry
    from azure_functions_runtime.functions import Registry
    from azure_functions_runtime.utils.validators import validate_script_file_name

    script_name = os.environ.get("PYTHON_SCRIPT_FILE_NAME", "function_app.py")
    validate_script_file_name(script_name)
    script = app_dir / script_name
    if not script.is_file():
        raise FileNotFoundError(f"{script} does not exist")
    sys.path.insert(0, str(app_dir))
    os.chdir(app_dir)
    load_binding_registry()  # worker_init_request does this before indexing
    indexed = loader.index_function_app(str(script))
    if not indexed:
        raise ValueError("the app defines no functions")
    registry = Registry()
    metadata, _ = loader.process_indexed_function(_Protos, registry, indexed, str(app_dir))
    results: list[dict[str, Any]] = []
    for meta in metadata:
        fields = meta.fields
        info = registry.get_function(fields["function_id"])
        results.append(
            {
                "name": fields["name"],
                "scriptFile": fields["script_file"],
                "entryPoint": fields["entry_point"],
                "isAsync": bool(info.is_async) if info is not None else None,
                "bindings": [json.loads(raw) for raw in fields["raw_bindings"]],
                "retry": _plain(fields.get("retry_options")),
            }
        )
    return results


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: worker_index.py APP_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    app_dir = Path(argv[1]).resolve()
    try:
        functions = index(app_dir)
    except Exception as exc:
        error = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
        print(json.dumps({"ok": False, "appDir": str(app_dir), "error": error}, indent=2))
        return 1
    import azure.functions
    import azure_functions_runtime.version

    print(
        json.dumps(
            {
                "ok": True,
                "appDir": str(app_dir),
                "python": sys.version.split()[0],
                "runtime": azure_functions_runtime.version.VERSION,
                "azureFunctions": getattr(azure.functions, "__version__", None),
                "functions": functions,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
