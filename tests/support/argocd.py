"""Argo CD's view of an object: the health check in docs/argocd/ run in Lua, as Argo CD runs it."""

from __future__ import annotations

from typing import Any

from lupa import LuaRuntime

from support.kube import REPO

CHECKS = REPO / "docs" / "argocd"


def argocd_health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """{status, message} for `obj`, which the script sees as the global `obj`."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute((CHECKS / f"llmop.dev_{kind}.lua").read_text())
    return {"status": str(result["status"]), "message": str(result["message"])}
