from hypothesis import given
from hypothesis import strategies as st

from corral.domain.names import normalize

name_part = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,12}", fullmatch=True)


def test_spellings_of_one_model_normalise_alike() -> None:
    forms = [
        "llama3.2",
        "llama3.2:latest",
        "LLAMA3.2",
        "registry.ollama.ai/library/llama3.2:latest",
        "library/llama3.2",
    ]
    assert {normalize(f) for f in forms} == {"llama3.2:latest"}


def test_tags_and_namespaces_are_kept() -> None:
    assert normalize("qwen2.5:7b") == "qwen2.5:7b"
    assert normalize("user/model:q4") == "user/model:q4"
    assert normalize("myhost:5000/ns/model") == "myhost:5000/ns/model:latest"
    assert normalize("") == ""


@given(name_part, st.one_of(st.none(), name_part))
def test_normalise_is_idempotent_and_case_blind(model: str, tag: str | None) -> None:
    name = model if tag is None else f"{model}:{tag}"
    once = normalize(name)
    assert normalize(once) == once
    assert normalize(name.upper()) == once
    assert once.endswith(":" + (tag or "latest"))
