"""The expected output routing's work estimate adds to the prompt (corral/protocol/prompts.py)."""

from __future__ import annotations

from corral.protocol.prompts import DEFAULT_OUTPUT_TOKENS, expected_output_tokens


def test_the_clients_cap_is_read_from_each_api_familys_field() -> None:
    assert expected_output_tokens({"options": {"num_predict": 40}}, "/api/generate") == 40
    assert expected_output_tokens({"max_tokens": 30}, "/v1/chat/completions") == 30
    assert expected_output_tokens({"max_completion_tokens": 20}, "/v1/chat/completions") == 20
    assert expected_output_tokens({"max_output_tokens": 10}, "/v1/responses") == 10
    assert expected_output_tokens({"max_tokens": 5}, "/v1/messages") == 5


def test_no_cap_or_no_limit_means_the_prior_and_embeddings_generate_nothing() -> None:
    assert expected_output_tokens({}, "/api/chat") == DEFAULT_OUTPUT_TOKENS
    assert expected_output_tokens({"options": {"num_predict": -1}}, "/api/generate") == DEFAULT_OUTPUT_TOKENS
    assert expected_output_tokens({"options": "x", "max_tokens": "many"}, "/v1/completions") == DEFAULT_OUTPUT_TOKENS
    assert expected_output_tokens({"input": "text"}, "/api/embed") == 0
    assert expected_output_tokens({"input": "text"}, "/v1/embeddings") == 0
