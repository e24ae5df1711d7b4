"""The one field of a multipart/form-data body that routing needs (`model` of /v1/audio/transcriptions),
found without parsing the uploaded file: the forwarded bytes stay the client's own."""

from __future__ import annotations

import re

_BOUNDARY = re.compile(rb'boundary="?([^";]+)"?', re.IGNORECASE)


def form_field(body: bytes, content_type: bytes, name: bytes) -> str | None:
    """The text value of form field `name`, or None when the body has no such field."""
    found = _BOUNDARY.search(content_type)
    if found is None:
        return None
    delimiter = b"--" + found.group(1).strip()
    for part in body.split(delimiter):
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        lines = head.split(b"\r\n")
        disposition = next((line for line in lines if line.lower().startswith(b"content-disposition")), b"")
        if re.search(rb'[;\s]name="?' + re.escape(name) + rb'"?(;|$|\s)', disposition):
            return value.removesuffix(b"\r\n").decode("utf-8", "replace")
    return None
