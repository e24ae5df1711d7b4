"""Request ids: the client's when it is a sane token, else a new process-unique one."""

from __future__ import annotations

import os
import re
from itertools import count

from corral.domain.record import ApiFamily, Observer, RequestRecord

__all__ = ["ApiFamily", "Observer", "RequestRecord", "request_id"]

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_prefix = os.urandom(6).hex()
_counter = count(1)


def request_id(supplied: bytes | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new process-unique id."""
    if supplied is not None and _VALID_ID.match(supplied):
        return supplied.decode("ascii")
    return f"{_prefix}-{next(_counter):x}"
