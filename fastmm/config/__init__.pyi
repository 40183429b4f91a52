# Type information for fastmm.config (fastmm/config/__init__.py), which
# drives compiled modules; tests/test_typing.py compares it with the runtime
# signatures.  The registry (registry.py) is typed Python of its own.
from typing import TypedDict

from fastmm.config.registry import ROWS as ROWS
from fastmm.config.registry import Row as Row
from fastmm.config.registry import Signature as Signature
from fastmm.config.registry import select as select
from fastmm.config.registry import signature as signature

__all__ = ["ROWS", "Row", "Signature", "select", "signature", "apply",
           "current", "blocks_for", "set_blocks"]

class _InForce(TypedDict):
    row: Row
    reason: str | None
    source: str
    isa: str                 # the kernel family in force
    forced_isa: str | None   # FASTMM_KERNEL, when set

def blocks_for(row: Row, isa: str | None = None) -> dict[str, tuple[int, int, int]]: ...
def set_blocks(row: Row, isa: str | None = None) -> None: ...
def apply(row: Row | None = None, reason: str | None = None, source: str = "built-in") -> Row: ...
def current() -> _InForce: ...
