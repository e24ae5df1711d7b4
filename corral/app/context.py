"""Request ids: the client's when it is a sane token, else a new process-unique one."""

from __future__ import annotations

import os
import re
from itertools import count

from corral.domain.record import ApiFamily, Observer, RequestRecord

__all__ = ["ApiFamily", "Observer", "RequestRecord", "request_id"]

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# A process-unique UUID-shaped id: random high bits, a counter in the low 48 (some servers, such as
# llama-cpp-python's, refuse an X-Request-ID that is not a UUID).
_prefix = ""
_counter = count(1)


def _new_prefix() -> None:
    global _prefix, _counter
    rand = os.urandom(10).hex()
    _prefix = f"{rand[:8]}-{rand[8:12]}-4{rand[13:16]}-{'89ab'[int(rand[16], 16) % 4]}{rand[17:20]}-"
    _counter = count(1)


_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)  # worker processes (app/workers.py) must not share ids


def request_id(supplied: bytes | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new process-unique id."""
    if supplied is not None and _VALID_ID.match(supplied):
        return supplied.decode("ascii")
    return f"{_prefix}{next(_counter) & 0xFFFFFFFFFFFF:012x}"


def is_uuid(value: str) -> bool:
    return _UUID.match(value) is not None
