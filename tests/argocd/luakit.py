"""Run an Argo CD health script the way Argo CD does.

Argo CD (util/lua) runs a custom health script in gopher-lua, a Lua 5.1, with only the base,
package and table libraries and an `os` holding just `time` and `date`; the live object is
the global `obj` (JSON objects as tables, arrays as 1-based tables, nulls absent) and the
script's returned table is read back as `{status, message}`. This module rebuilds that
sandbox in the reference Lua 5.1 (or LuaJIT) that lupa bundles, so a script that reaches for
`string.format`, `math.floor` or a Lua 5.2+ feature fails here as it would in Argo.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "argocd"
SCRIPTS = {
    "VoiceAgent": EXAMPLES / "health-voiceagent.lua",
    "ModelAsset": EXAMPLES / "health-modelasset.lua",
}
# What Argo accepts from a script; anything else becomes INVALID.
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
INVALID = {"status": "Unknown", "message": "Lua returned an invalid health status"}

# Everything the stock interpreter opens that Argo's does not. Strings lose their metatable
# too: gopher-lua gives them one only when the string library is opened.
_SANDBOX = """
local safe_os = { time = os.time, date = os.date }
debug.setmetatable("", nil)
for _, name in ipairs({ "string", "math", "io", "debug", "coroutine", "os", "python" }) do
  package.loaded[name] = nil
  _G[name] = nil
end
os = safe_os
package.loaded.os = safe_os
"""


def runtime(flavour: str = "lua51") -> Any:
    """A fresh Lua state with Argo's libraries, from lupa's bundled `flavour`."""
    lupa = importlib.import_module(f"lupa.{flavour}")
    lua = lupa.LuaRuntime(register_eval=False, register_builtins=False)
    if lua.eval("_VERSION") != "Lua 5.1":
        raise RuntimeError(f"lupa.{flavour} is not a Lua 5.1")
    lua.execute(_SANDBOX)
    return lua


def to_lua(lua: Any, value: Any) -> Any:
    """A JSON value as Argo's decodeValue builds it: null is absent (gopher-lua's Append
    drops nil, so a null array item is skipped too), numbers are numbers."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:
                table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        index = 0
        for item in value:
            if item is not None:
                index += 1
                table[index] = to_lua(lua, item)
        return table
    if isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"not a JSON value: {value!r}")


def health(kind: str, obj: dict[str, Any], flavour: str = "lua51") -> dict[str, str]:
    """The health Argo CD would show for `obj`, checked against Argo's contract."""
    return run(SCRIPTS[kind].read_text(), obj, flavour)


def run(script: str, obj: dict[str, Any], flavour: str = "lua51") -> dict[str, str]:
    lua = runtime(flavour)
    lua.globals().obj = to_lua(lua, obj)
    returned = lua.execute(script)
    if lupa_type(lua, returned) != "table":
        raise AssertionError(f"the script returned {returned!r}, Argo needs a table")
    result = dict(returned.items())
    if set(result) - {"status", "message"}:
        raise AssertionError(f"unexpected keys in the returned table: {sorted(result)}")
    if result.get("status") not in ARGO_STATUSES:
        return INVALID
    if not isinstance(result.get("message", ""), str):
        raise AssertionError(f"message must be a string, got {result['message']!r}")
    return {"status": result["status"], "message": result.get("message", "")}


def lupa_type(lua: Any, value: Any) -> str:
    return str(lua.globals().type(value))
