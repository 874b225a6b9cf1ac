"""Which key an OpenAI-compatible reference sends, checked on a real loopback server that
records each request's Authorization header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from still.errors import ModelError
from still.models import get_model
from still.models._openai import use_key_variables
from still.types import Message, Request, SamplingParams
from test_helpers.endpoint import Endpoint

OPENAI_SECRET = "sk-openai-secret-0123456789"


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """OPENAI_API_KEY set, as on a user's machine; no endpoint variable named yet."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_SECRET)
    monkeypatch.delenv("STILL_API_KEY", raising=False)
    monkeypatch.setenv("STILL_MAX_RETRIES", "0")
    use_key_variables({})
    yield
    use_key_variables({})


def _ask(ref: str) -> None:
    model = get_model(ref)
    req = Request(
        model=model.name,
        messages=(Message(role="user", content="hi"),),
        params=SamplingParams(max_tokens=4),
    )
    c = model.complete([req])[0]
    assert c.ok, c.error


def test_openai_key_is_not_sent_to_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_ORG_ID", "org-mine")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-mine")
    with Endpoint() as server:
        _ask(server.ref())
    assert server.auth == ["Bearer EMPTY"]
    assert not any("mine" in v for h in server.headers for v in h.values())


@pytest.mark.parametrize("by", ["base URL", "reference"])
def test_the_variable_the_task_names_is_sent(monkeypatch: pytest.MonkeyPatch, by: str) -> None:
    monkeypatch.setenv("GPU_BOX_KEY", "sk-gpu-box-key-42")
    monkeypatch.setenv("STILL_API_KEY", "sk-loopback-key")
    with Endpoint() as server:
        ref = server.ref()
        use_key_variables({ref.partition("#")[0] + "/" if by == "base URL" else ref: "GPU_BOX_KEY"})
        _ask(ref)
        _ask(ref.replace("#m", "#other"))  # another model on the same server
    if by == "base URL":
        assert server.auth == ["Bearer sk-gpu-box-key-42"] * 2
    else:  # named for one model only: the other gets the loopback key
        assert server.auth == ["Bearer sk-gpu-box-key-42", "Bearer sk-loopback-key"]


def test_still_api_key_goes_to_this_machine_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STILL_API_KEY", "sk-loopback-key")
    with Endpoint() as server:
        _ask(server.ref().replace("127.0.0.1", "localhost"))
    assert server.auth == ["Bearer sk-loopback-key"]
    remote = get_model("https://models.example.com/v1#m")  # built, nothing sent
    assert remote.client_kwargs["api_key"] == "EMPTY"  # type: ignore[attr-defined]


def test_a_key_over_plain_http_to_another_machine_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GPU_BOX_KEY", "sk-gpu-box-key-42")
    use_key_variables({"http://10.1.2.3:8000/v1": "GPU_BOX_KEY"})
    with pytest.raises(
        ModelError, match="refusing to send GPU_BOX_KEY over plain http to 10.1.2.3"
    ):
        get_model("http://10.1.2.3:8000/v1#m")  # refused before any connection
    # the same host over TLS gets it
    use_key_variables({"https://10.1.2.3:8000/v1": "GPU_BOX_KEY"})
    remote = get_model("https://10.1.2.3:8000/v1#m")
    assert remote.client_kwargs["api_key"] == "sk-gpu-box-key-42"  # type: ignore[attr-defined]
    # and OPENAI_BASE_URL pointing openai: at another machine over plain http is refused too
    monkeypatch.setenv("OPENAI_BASE_URL", "http://proxy.example.com/v1")
    with pytest.raises(ModelError, match="plain http to proxy.example.com"):
        get_model("openai:gpt-4o-mini")


def test_a_named_variable_must_be_set_and_not_a_providers_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GPU_BOX_KEY", raising=False)
    use_key_variables({"http://127.0.0.1:9/v1": "GPU_BOX_KEY"})
    with pytest.raises(ModelError, match="set GPU_BOX_KEY"):
        get_model("http://127.0.0.1:9/v1#m")
    with pytest.raises(ModelError, match="may not use OPENAI_API_KEY"):
        use_key_variables({"https://evil.example.com/v1": "OPENAI_API_KEY"})


@pytest.mark.parametrize(
    ("names", "error"),
    [
        ({"https://h/v1": "OPENAI_API_KEY"}, "not 'OPENAI_API_KEY'"),
        ({"openai:gpt-4o": "MY_KEY"}, "not an http"),
        ({"https://h/v1": "MY KEY"}, "not 'MY KEY'"),
    ],
)
def test_the_task_field_is_checked_on_load(
    tmp_path: Path, names: dict[str, str], error: str
) -> None:
    from still.tasks import load_task
    from test_helpers import write_task

    assert load_task(write_task(tmp_path, "scripted:echo", api_key_env={"https://h/v1": "K"}))
    with pytest.raises(Exception, match=error):
        load_task(write_task(tmp_path, "scripted:echo", api_key_env=names))
