"""Settings: precedence, parsing, validation and secrecy."""

from __future__ import annotations

import copy
import logging
import pickle
from typing import Any

import pytest

from infinium_logging import settings as settings_module
from infinium_logging.errors import ConfigurationError, ConfigurationWarning
from infinium_logging.settings import DEFAULT_BASE_URL, Settings, parse_bool, parse_tags

AGENT = "4f1c2b9e-8d7a-4e61-9f3b-2a5c6d7e8f90"
SECRET = "s3cret-value-xyz"
ENV = {"INFINIUM_AGENT_ID": AGENT, "INFINIUM_AGENT_SECRET": SECRET}


def test_defaults_match_the_official_client() -> None:
    """Every constructor parameter of the official client has its documented default."""
    s = Settings.from_env(ENV)
    assert (
        s.base_url,
        s.timeout,
        s.max_retries,
        s.enable_rate_limiting,
        s.requests_per_second,
        s.burst_size,
        s.enable_logging,
        s.log_level,
        s.verify_ssl,
    ) == (DEFAULT_BASE_URL, 30.0, 3, True, 10.0, 20, False, "INFO", True)
    assert s.user_agent.startswith("infinium-logging/")
    assert (s.max_queue_size, s.max_queue_bytes, s.workers, s.shutdown_timeout) == (
        2048,
        64 * 1024 * 1024,
        4,
        5.0,
    )


def test_precedence_argument_over_environment_over_default() -> None:
    """Explicit non-None argument > environment variable > default; empty variable = unset."""
    env = {**ENV, "INFINIUM_TIMEOUT": "12.5", "INFINIUM_MAX_RETRIES": "", "INFINIUM_WORKERS": "2"}
    s = Settings.from_env(env, timeout=3.0, workers=None)
    assert (s.timeout, s.max_retries, s.workers) == (3.0, 3, 2)


@pytest.mark.parametrize("text", ["true", "TRUE", "1", "yes", "On"])
def test_booleans_true(text: str) -> None:
    """The boolean vocabulary, any case."""
    assert parse_bool(text) is True
    assert Settings.from_env(
        {**ENV, "INFINIUM_VERIFY_SSL": "false", "INFINIUM_DISABLED": text}
    ).disabled


@pytest.mark.parametrize("text", ["false", "0", "no", "OFF"])
def test_booleans_false(text: str) -> None:
    """The boolean vocabulary, any case."""
    assert (
        Settings.from_env({**ENV, "INFINIUM_ENABLE_RATE_LIMITING": text}).enable_rate_limiting
        is False
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("INFINIUM_TIMEOUT", "soon", "Invalid INFINIUM_TIMEOUT='soon': expected a number"),
        (
            "INFINIUM_TIMEOUT",
            "-1",
            "Invalid INFINIUM_TIMEOUT='-1': expected a number from 0.001 to 3600",
        ),
        (
            "INFINIUM_MAX_RETRIES",
            "2.5",
            "Invalid INFINIUM_MAX_RETRIES='2.5': expected a whole number",
        ),
        (
            "INFINIUM_VERIFY_SSL",
            "maybe",
            "Invalid INFINIUM_VERIFY_SSL='maybe': expected one of true/false",
        ),
        ("INFINIUM_AGENT_ID", "agent-7", "Invalid INFINIUM_AGENT_ID='agent-7': expected a UUID"),
        ("INFINIUM_BASE_URL", "ftp://x", "Invalid INFINIUM_BASE_URL='ftp://x': expected an http"),
        (
            "INFINIUM_BASE_URL",
            "http://example.com/api/v1",
            "Invalid INFINIUM_BASE_URL='http://example.com/api/v1': plain http",
        ),
        (
            "INFINIUM_TAGS",
            "team",
            "Invalid INFINIUM_TAGS='team': expected comma-separated key=value",
        ),
        ("INFINIUM_LOG_LEVEL", "LOUD", "Invalid INFINIUM_LOG_LEVEL='LOUD': expected one of DEBUG"),
        (
            "INFINIUM_REQUESTS_PER_SECOND",
            "0",
            "Invalid INFINIUM_REQUESTS_PER_SECOND='0': expected a positive number",
        ),
        ("INFINIUM_WORKERS", "0", "Invalid INFINIUM_WORKERS='0'"),
    ],
)
def test_bad_environment_values_name_variable_and_value(
    variable: str, value: str, message: str
) -> None:
    """A bad value raises ConfigurationError naming the variable and what it got."""
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({**ENV, variable: value})
    assert str(info.value).startswith(message)
    assert info.value.variable == variable


@pytest.mark.parametrize("missing", ["INFINIUM_AGENT_ID", "INFINIUM_AGENT_SECRET"])
def test_missing_credentials_say_which_variable_to_set(missing: str) -> None:
    """A missing credential names the variable to set."""
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(ConfigurationError, match=f"set {missing}"):
        Settings.from_env(env)


def test_disabled_needs_no_credentials() -> None:
    """INFINIUM_DISABLED=true is valid on its own."""
    assert Settings.from_env({"INFINIUM_DISABLED": "yes"}).disabled


def test_short_secret_is_refused_without_showing_it() -> None:
    """The secret's value never appears, even when it is the bad value."""
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({**ENV, "INFINIUM_AGENT_SECRET": "abc1234"})
    assert "abc1234" not in str(info.value)
    assert "INFINIUM_AGENT_SECRET" in str(info.value)
    with pytest.raises(ConfigurationError) as info2:
        Settings(agent_id=AGENT, agent_secret="xyz7")
    assert "xyz7" not in str(info2.value)


def test_text_arguments_are_read_as_the_environment_reads_them() -> None:
    """dictConfig from JSON or a template passes text: numbers, booleans and tags given as text
    are read as their environment variables would be; a bad one names the setting."""
    text: dict[str, Any] = {
        "timeout": "10",
        "disabled": "yes",
        "tags": "team=search, env=prod",
        "workers": "2",
        "max_queue_bytes": "1_000_000",
    }
    settings = Settings(agent_id=AGENT, agent_secret=SECRET, **text)
    assert (settings.timeout, settings.disabled, settings.workers) == (10.0, True, 2)
    assert dict(settings.tags) == {"team": "search", "env": "prod"}
    assert settings.max_queue_bytes == 1_000_000
    soon: dict[str, Any] = {"timeout": "soon"}
    with pytest.raises(ConfigurationError, match=r"^Invalid setting timeout='soon': expected a"):
        Settings(agent_id=AGENT, agent_secret=SECRET, **soon)
    fraction: dict[str, Any] = {"workers": 2.0}
    with pytest.raises(ConfigurationError, match=r"workers=2\.0: expected a whole number"):
        Settings(agent_id=AGENT, agent_secret=SECRET, **fraction)


def test_a_misspelt_variable_is_named_once_in_a_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An INFINIUM_* variable that is no setting would be silently ignored: reading the
    environment warns once per process, naming it and the likely setting, never its value,
    on the library's logger and as a Python warning (shown even with logging unconfigured:
    a misspelt INFINIUM_DISABLED must not pass unseen)."""
    monkeypatch.setattr(settings_module, "_warned_variables", set())
    caplog.set_level(logging.WARNING, logger="infinium_logging.settings")
    env = {**ENV, "INFINIUM_WORKRES": "secret-looking-value", "INFINIUM_DISABLE": "true"}
    with pytest.warns(ConfigurationWarning) as issued:
        settings = Settings.from_env(env)
    Settings.from_env(env)  # once per process: no warning again (warnings are errors here)
    expected = [
        "INFINIUM_DISABLE is not a setting of infinium-logging and is ignored "
        "(did you mean INFINIUM_DISABLED?)",
        "INFINIUM_WORKRES is not a setting of infinium-logging and is ignored "
        "(did you mean INFINIUM_WORKERS?)",
    ]
    assert [str(w.message) for w in issued] == expected
    messages = [r.getMessage() for r in caplog.records if r.name == "infinium_logging.settings"]
    assert messages == expected
    assert "secret-looking-value" not in caplog.text
    assert not settings.disabled


def test_settings_copy_as_themselves_and_hash() -> None:
    """Immutable: copies are the same settings (not refused as pickling is), and equal settings
    hash alike, tags included, so they can key a dict."""
    settings = Settings(agent_id=AGENT, agent_secret=SECRET, tags={"team": "search"})
    assert copy.copy(settings) is settings and copy.deepcopy(settings) is settings
    twin = Settings(agent_id=AGENT, agent_secret=SECRET, tags={"team": "search"})
    assert {settings: "x"}[twin] == "x"
    assert hash(settings) != hash(settings.replace(tags={"team": "other"}))


def test_a_secret_read_from_a_file_loses_its_line_break() -> None:
    """Surrounding whitespace is dropped from the credentials and URL, as from the environment:
    ``agent_secret=open(path).read()`` keeps the file's final line break."""
    settings = Settings(
        agent_id=f" {AGENT}\n", agent_secret=SECRET + "\n", base_url=" http://127.0.0.1:9/api/v1\n"
    )
    assert (settings.agent_id, settings.agent_secret) == (AGENT, SECRET)
    assert settings.base_url == "http://127.0.0.1:9/api/v1"
    assert (
        Settings.from_env({**ENV, "INFINIUM_AGENT_SECRET": f"  {SECRET}\r\n"}).agent_secret
        == SECRET
    )


@pytest.mark.parametrize(
    "secret", ["Kq7Z\nWx8Vsecret", "Kq7Z\r\nWx8Vsecret", "секретный12345", "Kq7Z\tWx8Vsecret"]
)
def test_a_secret_that_cannot_travel_in_a_header_is_refused_unseen(secret: str) -> None:
    """A line break, control or non-ASCII character can never be sent in x-agent-key: a
    configuration error now (not a network error at every retry, quoting the secret)."""
    with pytest.raises(ConfigurationError) as info:
        Settings(agent_id=AGENT, agent_secret=secret)
    assert "printable ASCII" in str(info.value)
    for part in secret.split():
        assert part not in str(info.value)
    with pytest.raises(ConfigurationError) as from_env:
        Settings.from_env({**ENV, "INFINIUM_AGENT_SECRET": secret})
    assert "INFINIUM_AGENT_SECRET" in str(from_env.value)
    assert secret.split(maxsplit=1)[0] not in str(from_env.value)


def test_a_user_agent_that_cannot_travel_in_a_header_is_refused() -> None:
    """The User-Agent header has the same rule (its value is shown: it is no secret)."""
    with pytest.raises(ConfigurationError, match=r"user_agent='bot\\nx'.*printable ASCII"):
        Settings(agent_id=AGENT, agent_secret=SECRET, user_agent="bot\nx")


def test_a_password_in_the_base_url_is_refused_and_never_shown() -> None:
    """``user:password@`` is never sent (the agent secret is the credential) and would show in
    every repr: refused, with the password masked in the error."""
    url = "https://bob:PassInUrl99@infinium.example/api/v1"
    with pytest.raises(ConfigurationError) as info:
        Settings(agent_id=AGENT, agent_secret=SECRET, base_url=url)
    assert "PassInUrl99" not in str(info.value)
    assert "https://bob:***@infinium.example/api/v1" in str(info.value)
    with pytest.raises(ConfigurationError) as from_env:
        Settings.from_env({**ENV, "INFINIUM_BASE_URL": url})
    assert "PassInUrl99" not in str(from_env.value)
    assert "INFINIUM_BASE_URL" in str(from_env.value)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://infinium.example:abc/api/v1", "could not be cast to integer"),
        ("https://infinium.example:99999/api/v1", "out of range"),
        ("https://infinium.example:0/api/v1", "port from 1 to 65535"),
        ("https://[::1/api/v1", "Invalid IPv6 URL"),
        ("https://infinium.example/api/v1?", "without query or fragment"),
        ("https://infinium.example/api/v1#", "without query or fragment"),
        ("https://infinium example/api/v1", "without spaces"),
        ("https://infinium.example/api/v 1", "without spaces"),
        ("https://infinium.example/api/v1\x00", "control characters"),
        ("https://[::1]x/api/v1", "urllib3 cannot parse"),
    ],
)
def test_a_base_url_that_cannot_be_requested_names_the_variable(url: str, reason: str) -> None:
    """A URL urllib3 could not send to (a bad port, a broken IPv6 literal, a space) is refused
    where it is configured, naming the variable and the value, never later as a ValueError."""
    with pytest.raises(ConfigurationError, match=reason) as info:
        Settings.from_env({**ENV, "INFINIUM_BASE_URL": url})
    assert f"INFINIUM_BASE_URL={url!r}" in str(info.value)
    assert info.value.variable == "INFINIUM_BASE_URL"
    with pytest.raises(ConfigurationError, match=reason):
        Settings(agent_id=AGENT, agent_secret=SECRET, base_url=url)


def test_secret_never_in_repr_str_masked_or_pickle(caplog: pytest.LogCaptureFixture) -> None:
    """repr, str, masked() and log lines never carry the secret; pickling is refused."""
    s = Settings.from_env(ENV)
    logging.getLogger("test").warning("settings: %s %r", s, s)
    for text in (repr(s), str(s), str(s.masked()), caplog.text, f"{s}"):
        assert SECRET not in text
    assert "agent_secret=<set>" in repr(s)
    assert s.masked()["agent_secret"] == f"<set, {len(SECRET)} characters>"
    with pytest.raises(TypeError):
        pickle.dumps(s)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8420/api/v1",
        "http://localhost/api/v1",
        "http://[::1]:9/api/v1",
        "http://127.9.9.9/api/v1",
    ],
)
def test_plain_http_allowed_for_loopback(url: str) -> None:
    """Loopback hosts may use http; the trailing slash is dropped."""
    assert Settings(agent_id=AGENT, agent_secret=SECRET, base_url=url + "/").base_url == url


def test_plain_http_elsewhere_needs_explicit_opt_in() -> None:
    """INFINIUM_ALLOW_INSECURE_HTTP=true lets http reach a remote host."""
    env = {
        **ENV,
        "INFINIUM_BASE_URL": "http://collector.internal/api/v1",
        "INFINIUM_ALLOW_INSECURE_HTTP": "true",
    }
    assert Settings.from_env(env).base_url == "http://collector.internal/api/v1"


def test_tags_parse_into_custom_tags() -> None:
    """INFINIUM_TAGS="team=search,env=prod" becomes a read-only mapping."""
    assert parse_tags(" team = search , env=prod ,") == {"team": "search", "env": "prod"}
    s = Settings.from_env({**ENV, "INFINIUM_TAGS": "team=search,env=prod"})
    assert dict(s.tags) == {"team": "search", "env": "prod"}
    with pytest.raises(TypeError):
        s.tags["x"] = "y"  # type: ignore[index]


def test_settings_are_immutable_and_replace_validates() -> None:
    """Settings cannot be changed in place; replace() builds a validated copy."""
    s = Settings.from_env(ENV)
    with pytest.raises(AttributeError):
        s.timeout = 1.0  # type: ignore[misc]
    assert s.replace(timeout=2.0).timeout == 2.0
    with pytest.raises(ConfigurationError, match="timeout"):
        s.replace(timeout=0)
    with pytest.raises(TypeError, match="unknown setting"):
        s.replace(timout=2.0)


def test_unknown_override_is_a_type_error() -> None:
    """A misspelt keyword is caught, with the list of known settings."""
    with pytest.raises(TypeError, match=r"unknown setting.*timout"):
        Settings.from_env(ENV, timout=1)


def test_trace_url() -> None:
    """The trace endpoint is built from base_url and agent_id."""
    s = Settings.from_env({**ENV, "INFINIUM_BASE_URL": "https://example.com/api/v1/"})
    assert s.trace_url == f"https://example.com/api/v1/agents/{AGENT}/trace"


def test_bad_argument_names_the_argument() -> None:
    """A bad keyword argument is reported with the argument's name."""
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(ENV, burst_size=0)
    assert info.value.variable == "burst_size"
    assert "burst_size=0" in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INFINIUM_TIMEOUT", "abc"),
        ("INFINIUM_AGENT_ID", "not-a-uuid"),
        ("INFINIUM_BASE_URL", "http://remote.example/api/v1"),
        ("INFINIUM_AGENT_SECRET", "short"),
    ],
)
def test_disabled_works_when_another_variable_is_invalid(variable: str, value: str) -> None:
    """The off switch may be how an operator gets out of a broken configuration: it works,
    the bad variable left out and named in a warning (never a secret's value)."""
    env = {**ENV, "INFINIUM_DISABLED": "true", variable: value}
    with pytest.warns(ConfigurationWarning, match=f"Invalid {variable}=.*left out") as issued:
        settings = Settings.from_env(env)
    assert settings.disabled
    assert all("short" not in str(w.message) for w in issued)
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env({**env, "INFINIUM_DISABLED": "false"})
    with pytest.raises(ConfigurationError, match="Invalid INFINIUM_"):  # not switched off
        Settings.from_env({**env, "INFINIUM_DISABLED": "maybe"})


def test_a_password_in_a_base_url_too_broken_to_parse_is_still_masked() -> None:
    """urlsplit gives up on a broken [IPv6] literal: the password is masked by hand."""
    url = "https://agent:MyAgentSecret99@[platform.example/api/v1"
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({**ENV, "INFINIUM_BASE_URL": url})
    assert "MyAgentSecret99" not in str(info.value)
    assert "agent:***@[platform.example/api/v1" in str(info.value)


def test_a_rule_between_two_settings_names_the_variable_that_was_set() -> None:
    """INFINIUM_RETRY_BACKOFF_BASE above the (default) maximum: the error names it, and with
    INFINIUM_DISABLED=true it is left out like any other bad variable."""
    env = {**ENV, "INFINIUM_RETRY_BACKOFF_BASE": "1000"}
    with pytest.raises(ConfigurationError, match=r"INFINIUM_RETRY_BACKOFF_BASE='1000'") as info:
        Settings.from_env(env)
    assert info.value.variable == "INFINIUM_RETRY_BACKOFF_BASE"
    with pytest.warns(ConfigurationWarning, match="INFINIUM_RETRY_BACKOFF_BASE"):
        settings = Settings.from_env({**env, "INFINIUM_DISABLED": "true"})
    assert settings.disabled and settings.retry_backoff_base == Settings.retry_backoff_base
