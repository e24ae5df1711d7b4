"""Token usage of an answer, read from the bytes relayed (interim: replaced by the streaming meter)."""

from __future__ import annotations

import re

from corral.domain.record import ApiFamily, RequestRecord

_TAIL = 4096
_NATIVE_COUNTS = (re.compile(rb'"prompt_eval_count":(\d+)'), re.compile(rb'"eval_count":(\d+)'))
# /v1 chat and completions say prompt/completion tokens; /v1/responses and /v1/messages input/output.
_OPENAI_COUNTS = (
    re.compile(rb'"(?:prompt_tokens|input_tokens)":(\d+)'),
    re.compile(rb'"(?:completion_tokens|output_tokens)":(\d+)'),
)
_LOAD_DURATION = re.compile(rb'"load_duration":(\d+)')


class UsageMeter:
    __slots__ = ("family", "tail")

    def __init__(self, family: ApiFamily) -> None:
        self.family = family
        self.tail = b""

    def feed(self, data: bytes) -> None:
        tail = self.tail + data if len(data) < _TAIL else data
        self.tail = tail[-_TAIL:]

    def settle(self, record: RequestRecord) -> None:
        patterns = _NATIVE_COUNTS if self.family is ApiFamily.OLLAMA else _OPENAI_COUNTS
        prompt = patterns[0].findall(self.tail)
        completion = patterns[1].findall(self.tail)
        if prompt:
            record.prompt_tokens = int(prompt[-1])
        if completion:
            record.completion_tokens = int(completion[-1])
        load = _LOAD_DURATION.findall(self.tail)
        record.load_s = int(load[-1]) / 1e9 if load else None
