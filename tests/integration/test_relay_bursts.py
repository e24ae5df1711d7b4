"""The relay writes the pieces of one read from the node together (corral/app/relay.py), and still
never holds a stream's chunk back: a node that sends two chunks in one write and then waits for the
client to have them must see the client get both, before it produces more."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from procs import Proc, free_port, running, start_corral, wait_for

NODE = Path(__file__).with_name("burst_node.py")


def test_chunks_of_one_read_reach_the_client_before_the_node_sends_more() -> None:
    port = free_port()
    node = Proc([sys.executable, str(NODE), str(port)], port)
    with running(node):
        wait_for(lambda: httpx.get(node.url + "/api/version", timeout=1).status_code == 200, 15, "the burst node")
        config = {"backends": [{"name": "burst", "url": node.url, "models": ["burst:1b"]}]}
        with running(start_corral(config)) as (corral,):
            check_bursts(node, corral)


def check_bursts(node: Proc, corral: Proc) -> None:
    headers = {"Host": f"localhost:{corral.port}"}
    seen: list[str] = []
    body = {"model": "burst:1b", "prompt": "go"}
    with httpx.stream("POST", corral.url + "/api/generate", json=body, headers=headers, timeout=30) as reply:
        assert reply.status_code == 200
        for text in reply.iter_lines():
            seen.append(json.loads(text)["response"])
            if len(seen) in (1, 3):  # the first burst, then the two chunks of one write, are here
                httpx.post(node.url + "/_burst/next", timeout=5)
    waits = httpx.get(node.url + "/_burst/waits", timeout=5).json()
    assert waits == [True, True], "a chunk was held back until the node sent more"
    assert seen == ["one", "two", "three", ""]
