"""The node file of file discovery: URLs or mappings, the source's defaults, errors that name the entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.app.node_sources import parse_node_file
from corral.config import NodeFile

SOURCE = NodeFile(path=Path("nodes.yaml"), max_concurrency=2, type="ollama")


def test_urls_and_mappings_get_the_source_defaults_and_stable_names() -> None:
    nodes = parse_node_file(
        '["http://10.0.0.5:11434", {"url": "http://[fd00::1]:8000", "type": "openai", "name": "gpu-7"}]', SOURCE
    )
    assert [(n.name, n.url, n.type, n.max_concurrency) for n in nodes] == [
        ("file:10.0.0.5:11434", "http://10.0.0.5:11434", "ollama", 2),
        ("gpu-7", "http://[fd00::1]:8000", "openai", 2),
    ]


def test_yaml_with_a_nodes_key_and_an_empty_file() -> None:
    assert [n.name for n in parse_node_file("nodes:\n  - url: http://h:1\n", SOURCE)] == ["file:h:1"]
    assert parse_node_file("", SOURCE) == []
    assert parse_node_file("[]", SOURCE) == []


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[{"name": "x"}]', "[0]"),
        ('["http://ok:1", "ftp://h:1"]', "[1].url"),
        ('[{"url": "http://h:1", "max_concurrency": 0}]', "[0].max_concurrency"),
        ('[{"url": "http://h:1", "colour": "red"}]', "[0]"),
        ('{"url": "http://h:1"}', "list of nodes"),
    ],
)
def test_a_bad_file_names_the_entry(text: str, where: str) -> None:
    with pytest.raises(ValueError, match=__import__("re").escape(where)):
        parse_node_file(text, SOURCE)
