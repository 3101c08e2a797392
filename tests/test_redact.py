"""Redaction: every kind of secret found and replaced by a marker, ordinary text left alone."""

from __future__ import annotations

import os
import string
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infinium_logging import _redact_scan, redact
from infinium_logging.convert import to_task
from infinium_logging.errors import ConfigurationError
from infinium_logging.model import TaskData, encode_task
from infinium_logging.redact import Redactor, parse_redact, set_redaction_hook
from infinium_logging.settings import Settings
from infinium_logging.testing import capture_tasks

AGENT_ID = "5f3c6a2e-8d1b-4c7a-9e2f-1a2b3c4d5e6f"

#: One realistic example of every kind, with the kind its marker must name.  Test values
#: only, made to look like the real ones (AWS's own documentation examples among them).
SEEDED: dict[str, tuple[str, str]] = {
    "openai": ("sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" + "T3BlbkFJ7Qx", "api_key"),
    "anthropic": ("sk-ant-api03-" + "Xy7_Zq-9" * 11 + "kLm4AA", "api_key"),
    "google": ("AIza" + "SyD3m0-Fak3KeyF0rT3st1ngPurp0s3s_xy", "api_key"),
    "github": ("ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "api_key"),
    "github_fine": ("github_pat_" + "11ABCDEFG0" + "x1Y2z3" * 12, "api_key"),
    "slack": ("xoxb-" + "2048123456789-4096123456789-AbCdEfGhIjKlMnOpQrStUvWx", "api_key"),
    "stripe": ("sk_live_" + "51HbQ2mLk9Xy7Zq3Wv8Ut5Rs", "api_key"),
    "aws_id": ("AKIAIOSFODNN7EXAMPLE", "aws_access_key_id"),
    "jwt": (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
        ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "jwt",
    ),
}
#: Secrets known by where they sit: (text holding it, the secret, kind).
IN_CONTEXT: list[tuple[str, str, str]] = [
    (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_key",
    ),
    (
        "AWS_KEY: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_key",
    ),
    ("Authorization: Bearer 4f9Qx7Lm2Zp8Rt5Vw1Ny3Kd6", "4f9Qx7Lm2Zp8Rt5Vw1Ny3Kd6", "bearer_token"),
    ("postgres://app:Tr0ub4dor&3@db.internal:5432/orders", "Tr0ub4dor&3", "password"),
    ("connect with password=hunter2hunter2 then retry", "hunter2hunter2", "secret"),
    ('{"api_key": "k-17-prod-zzq"}', "k-17-prod-zzq", "secret"),
    ("client_secret: 'q8!w9#e0$r1'", "q8!w9#e0$r1", "secret"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAq7BFUAkGdYx\n9s0Hh2X3ZfQ==\n"
        "-----END RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEAq7BFUAkGdYx",
        "private_key",
    ),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU",
        "private_key",
    ),
]
PII: list[tuple[str, str, str]] = [
    ("write to jane.roe+billing@example.co.uk today", "jane.roe+billing@example.co.uk", "email"),
    ("call +44 20 7946 0958 after five", "+44 20 7946 0958", "phone"),
    ("call (555) 867-5309", "867-5309", "phone"),
    ("card 4111 1111 1111 1111 on file", "4111 1111 1111 1111", "card"),
    ("card 5500-0000-0000-0004 on file", "5500-0000-0000-0004", "card"),
    ("pay to DE89 3704 0044 0532 0130 00 now", "3704 0044 0532", "iban"),
    ("pay to GB82WEST12345698765432 now", "GB82WEST12345698765432", "iban"),
]
#: Text that must come through untouched: prose, code, identifiers, digests, encodings.
ORDINARY: list[str] = [
    "The agent compared the invoice lines against the pricing table and found a duplicate.",
    "Tokens used: 1,234 prompt tokens and 567 completion tokens (max_tokens=2048).",
    "def rotate(password_hash: str) -> str:\n    new_password = generate()\n    return new_password",
    "token = tokenizer.encode(text); secret_sauce = mix(token)",
    "if not api_key: raise ValueError('missing API key')",
    "request 5f3c6a2e-8d1b-4c7a-9e2f-1a2b3c4d5e6f took 1.25s at 2026-01-15T10:30:00.000000Z",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 ok",
    "git commit 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12 by the release job",
    "payload SGVsbG8sIFdvcmxkISBUaGlzIGlzIGEgYmFzZTY0IGJsb2IgdGhhdCBtdXN0IHN0YXk= end",
    "model claude-3-5-sonnet-20241022 and gpt-4o-2024-08-06 on us-east-1, ask-the-desk",
    "ticket #48213 (priority 2) version 1.2.3 build 20260115.4 port 5432",
    "see https://docs.example.com/guide?page=2#auth for the authentication flow",
    "the task_objective is to file the refund; the framework_version is 0.2.45",
    "disk usage 1234567 bytes of 9876543210, 42.5% free, id 100200300",
    "Use sk-learn? No: scikit-learn. The skeleton key metaphor is not a key.",
    "AKIA is a prefix; passwords are hashed with bcrypt; the secret is good prose.",
]


@pytest.fixture(autouse=True, scope="module", params=["hyperscan", "re"])
def scan_engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs with the one-pass scan (the fast extra, installed by dev, as a sender
    thread prepares it) and with re's pass per pattern (a plain install, or before that)."""
    saved = redact.Redactor.__init__
    one_pass = request.param == "hyperscan"
    assert _redact_scan.available() is not None, "dev installs the fast extra"

    def made(self: Redactor, *args: Any, **kwargs: Any) -> None:
        saved(self, *args, **{**kwargs, "one_pass": one_pass})
        self.prepare()
        assert (self._scanner is not None) == one_pass or not self.active

    redact.Redactor.__init__ = made  # type: ignore[method-assign]
    try:
        yield request.param
    finally:
        redact.Redactor.__init__ = saved  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def no_hook() -> Iterator[None]:
    """Every test starts and ends without a redaction hook."""
    set_redaction_hook(None)
    yield
    set_redaction_hook(None)


def base(**fields: Any) -> dict[str, Any]:
    """The fields of a minimal trace, with ``fields`` on top."""
    return {
        "name": "task",
        "description": "described",
        "current_datetime": "2026-01-01T00:00:00Z",
        "duration": 1.0,
        **fields,
    }


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_each_provider_key_is_replaced_by_its_marker(name: str) -> None:
    """A key of each provider, in a sentence, becomes its kind's marker and nothing else."""
    secret, kind = SEEDED[name]
    redactor = Redactor()
    out = redactor.text(f"the agent used {secret}, then stopped")
    assert out == f"the agent used [REDACTED:{kind}], then stopped"
    assert redactor.counts() == {kind: 1}


@pytest.mark.parametrize(("text", "secret", "kind"), IN_CONTEXT)
def test_secrets_known_by_their_place_are_replaced(text: str, secret: str, kind: str) -> None:
    """Secrets found by what surrounds them go, and the marker names their kind."""
    out = Redactor().text(text)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out


@pytest.mark.parametrize(("text", "value", "kind"), PII)
def test_pii_is_redacted_only_on_request(text: str, value: str, kind: str) -> None:
    """E-mails, phones, cards and IBANs go with ``secrets,pii``, and stay with ``secrets``."""
    assert Redactor("secrets").text(text) == text
    out = Redactor("secrets,pii").text(text)
    assert value not in out
    assert f"[REDACTED:{kind}]" in out


def test_card_numbers_must_pass_luhn_and_ibans_their_checksum() -> None:
    """Digit runs that fail the card or IBAN checksum are not cards or IBANs."""
    redactor = Redactor("pii")
    assert redactor.text("order 4111 1111 1111 1112 shipped") == "order 4111 1111 1111 1112 shipped"
    assert redactor.text("ref DE00 3704 0044 0532 0130 00") == "ref DE00 3704 0044 0532 0130 00"


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_left_alone(text: str) -> None:
    """Prose, code, UUIDs, digests, base64 and version strings pass untouched, PII on or not."""
    assert Redactor("secrets").text(text) == text
    if "@" not in text:
        assert Redactor("secrets,pii").text(text) == text


def test_the_marker_keeps_nothing_of_the_secret() -> None:
    """No prefix, suffix or length: two keys of different lengths give the same text."""
    short, long = "sk-" + "a1" * 12, "sk-proj-" + "b2" * 40
    redactor = Redactor()
    assert redactor.text(f"k={short}") == redactor.text(f"k={long}") == "k=[REDACTED:api_key]"


def test_values_under_secret_named_keys_are_redacted_whatever_they_look_like() -> None:
    """``password``, ``api_key``, ``Authorization``, ``x-api-key``... in metadata: the value
    goes (text or number); ``max_tokens`` and ``token_count`` are not secret names."""
    metadata = {
        "password": "x",
        "Authorization": "Basic Zm9vOmJhcg==",
        "x-api-key": 123456,
        "db": {"client_secret": "abc", "access_token": "t"},
        "max_tokens": 512,
        "token_count": 3,
        "tokenizer": "cl100k",
    }
    task = to_task(
        base(steps=[{"step_number": 1, "action": "a", "description": "d", "metadata": metadata}])
    )
    out = Redactor().task(task)
    assert out.steps[0].metadata == {
        "password": "[REDACTED:secret]",
        "Authorization": "[REDACTED:secret]",
        "x-api-key": "[REDACTED:secret]",
        "db": {"client_secret": "[REDACTED:secret]", "access_token": "[REDACTED:secret]"},
        "max_tokens": 512,
        "token_count": 3,
        "tokenizer": "cl100k",
    }
    assert task.steps is not None and task.steps[0].metadata == metadata  # not changed in place


def test_camel_case_names_are_secret_names_too() -> None:
    """Keys as JavaScript and AWS write them (``accessToken``, ``SecretAccessKey``,
    ``basicAuth``) name secrets as their snake_case forms do, in a dict and in JSON text;
    ``maxTokens``, ``tokenCount``, ``authorName`` and ``AccessKeyId`` do not."""
    secret = {
        "accessToken": "t-1",
        "SecretAccessKey": "k-2",
        "clientSecret": "s-3",
        "sessionToken": "t-4",
        "OpenAIApiKey": "k-5",
        "basicAuth": "u:p",
        "dbPassword": "p-6",
    }
    plain = {"maxTokens": 512, "tokenCount": 3, "authorName": "Ann", "AccessKeyId": "id-7"}
    task = to_task(
        base(
            steps=[
                {
                    "step_number": 1,
                    "action": "a",
                    "description": "d",
                    "metadata": {"creds": secret, **plain},
                    "output_preview": '{"refreshToken": "opaque-r3fr3sh", "maxTokens": 512}',
                }
            ]
        )
    )
    for out in (Redactor().task(task), Redactor().encoded(task, encode_task(task))):
        step = out.steps[0]
        assert step.metadata == {"creds": dict.fromkeys(secret, "[REDACTED:secret]"), **plain}
        assert step.output_preview == '{"refreshToken": "[REDACTED:secret]", "maxTokens": 512}'


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "client_secret",
        "token",
        "api_key",
        "apikey",
        "x-api-key",
        "access_key",
        "private_key",
        "authorization",
        "auth",
        "x_auth",
        "credentials",
        "cookie",
        "set-cookie",
        "session_id",
        "accessToken",
        "basicAuth",
        "xAuth",
        "SecretAccessKey",
    ],
)
def test_a_secret_named_key_alone_in_a_trace_is_not_missed_by_the_scan(key: str) -> None:
    """The one scan of the encoded trace (JSON on a sender, MessagePack for a spool record)
    sees a value under any secret name, even when nothing else in the trace hints at one."""
    task = to_task(
        base(
            steps=[
                {"step_number": 1, "action": "a", "description": "d", "metadata": {key: "plain1"}}
            ]
        )
    )
    redactor = Redactor()
    for out in (redactor.encoded(task, encode_task(task)), redactor.task(task)):
        assert out.steps[0].metadata == {key: "[REDACTED:secret]"}


def test_a_clean_trace_comes_back_as_the_same_object() -> None:
    """Nothing to redact: no copy is made (the common case costs a scan, no allocation)."""
    task = to_task(base(input_summary="an ordinary summary"))
    assert Redactor().task(task) is task


def test_off_still_redacts_the_agent_secret() -> None:
    """``off`` leaves secrets of the trace alone, never the exporter's own agent secret."""
    redactor = Redactor("off", secrets=["agent-secret-123456"])
    key = SEEDED["openai"][0]
    assert redactor.text(f"{key} agent-secret-123456") == f"{key} [REDACTED:secret]"


def test_a_secret_cut_short_by_truncation_still_goes() -> None:
    """A preview cut inside a key keeps no part of it."""
    task = to_task(
        base(
            steps=[
                {
                    "step_number": 1,
                    "action": "a",
                    "description": "d",
                    "input_preview": "x" * 480 + " " + SEEDED["openai"][0],
                }
            ]
        ),
        strict=False,
    )
    assert task.steps is not None and task.steps[0].input_preview is not None
    assert task.steps[0].input_preview.endswith("…[truncated]")
    out = Redactor().task(task)
    assert "sk-" not in encode_task(out).decode()


def test_the_hook_sees_every_string_with_its_place() -> None:
    """The hook gets each string (keys too) with where it sits, and its answer is kept."""
    seen: dict[str, str] = {}

    def hook(text: str, where: str) -> str:
        seen[where] = text
        return text.replace("Acme", "[customer]")

    set_redaction_hook(hook)
    task = to_task(
        base(
            name="Acme refund",
            steps=[
                {"step_number": 1, "action": "a", "description": "d", "metadata": {"who": "Acme"}}
            ],
        )
    )
    redactor = Redactor()
    out = redactor.task(task)
    assert out.name == "[customer] refund"
    assert out.steps[0].metadata == {"who": "[customer]"}
    assert seen["name"] == "Acme refund"
    assert seen["steps[0].metadata.who"] == "Acme"
    assert "steps[0].metadata.who{key}" in seen
    assert redactor.counts() == {"hook": 2}


@pytest.mark.parametrize("answer", [ValueError("boom"), None])
def test_a_failing_hook_fails_closed_and_is_counted(answer: Exception | None) -> None:
    """A hook that raises (or answers something not a string) costs the string, never an
    exception: it is replaced whole and counted as ``hook_error``."""

    def hook(text: str, where: str) -> str:
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    set_redaction_hook(hook)
    redactor = Redactor()
    out = redactor.task(to_task(base(name="n")))
    assert out.name == "[REDACTED:hook_error]"
    assert redactor.counts()["hook_error"] == 3  # name, description, datetime


def test_the_hook_must_be_callable() -> None:
    """A hook that cannot be called is refused where it is set."""
    with pytest.raises(TypeError, match="callable"):
        set_redaction_hook("nope")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("secrets", "secrets"),
        (" PII , secrets", "secrets,pii"),
        ("all", "secrets,pii"),
        ("off", "off"),
        ("none", "off"),
        ("pii", "pii"),
    ],
)
def test_the_setting_is_read_into_its_normal_form(text: str, mode: str) -> None:
    """``INFINIUM_REDACT`` accepts a list in any case and order."""
    assert parse_redact(text) == mode


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INFINIUM_REDACT", "secret"),
        ("INFINIUM_REDACT", "off,pii"),
        ("INFINIUM_SAMPLE_RATE", "1.5"),
        ("INFINIUM_SAMPLE_RATE", "half"),
    ],
)
def test_a_bad_setting_names_the_variable_and_the_value(variable: str, value: str) -> None:
    """The error says which variable and which value were wrong."""
    environ = {
        "INFINIUM_AGENT_ID": AGENT_ID,
        "INFINIUM_AGENT_SECRET": "s3cr3t-value",
        variable: value,
    }
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(environ)
    assert f"{variable}={value!r}" in str(caught.value)


def test_a_bad_setting_for_capture_is_said_where_capture_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``capture_tasks`` reads ``INFINIUM_REDACT`` when it starts and says what is wrong."""
    monkeypatch.setenv("INFINIUM_REDACT", "everything")
    redact._reset_default()
    try:
        with (
            pytest.raises(ConfigurationError, match="INFINIUM_REDACT='everything'"),
            capture_tasks(),
        ):
            pass
        assert redact.sink_redactor().mode == "secrets,pii"  # sinks fail closed meanwhile
    finally:
        redact._reset_default()


# --- property tests ---------------------------------------------------------------------------

_WORDS = st.sampled_from(
    [
        "the",
        "agent",
        "refund",
        "invoice",
        "policy",
        "(retry)",
        "id:",
        "key",
        "value",
        "done.",
        "step",
        "token",
        "usage",
        "42",
        "2026-01-15",
        "->",
        "ok",
        "user_id=7",
    ]
)
_PROSE = st.lists(_WORDS, max_size=12).map(" ".join)
_SEP = st.sampled_from([" ", "\n", " (", '"', "'", ", ", ": ", "\t"])


def _alnum(n: int) -> st.SearchStrategy[str]:
    return st.text(string.ascii_letters + string.digits, min_size=n, max_size=n)


_SECRETS: dict[str, st.SearchStrategy[str]] = {
    "openai": _alnum(48).map(lambda s: "sk-proj-" + s),
    "anthropic": _alnum(93).map(lambda s: "sk-ant-api03-" + s + "AA"),
    "google": _alnum(35).map(lambda s: "AIza" + s),
    "github": _alnum(36).map(lambda s: "ghp_" + s),
    "slack": _alnum(24).map(lambda s: "xoxp-1234567890-" + s),
    "stripe": _alnum(24).map(lambda s: "sk_live_" + s),
    "aws_id": st.text(string.ascii_uppercase + string.digits, min_size=16, max_size=16).map(
        lambda s: "AKIA" + s
    ),
    "jwt": st.tuples(_alnum(20), _alnum(30), _alnum(43)).map(
        lambda p: f"eyJ{p[0]}.eyJ{p[1]}.{p[2]}"
    ),
}
_PLACES = (
    "name",
    "description",
    "input_summary",
    "output_summary",
    "step",
    "preview",
    "metadata",
    "metadata_key",
    "tool",
    "llm",
    "error",
    "stack",
    "tag",
    "objective",
    "general",
)


def _placed(place: str, text: str) -> dict[str, Any]:
    step: dict[str, Any] = {"step_number": 1, "action": "a", "description": "d"}
    if place in ("name", "description", "input_summary", "output_summary"):
        return base(**{place: text})
    if place == "objective":
        return base(expected_outcome={"task_objective": text})
    if place == "general":
        return base(general={"warnings": [text], "tags": ["x", text]})
    if place == "tag":
        return base(environment={"custom_tags": {"team": text}})
    if place == "error":
        return base(errors=[{"error_type": "E", "message": text}])
    if place == "stack":
        return base(errors=[{"error_type": "E", "message": "m", "stack_trace": text}])
    if place == "step":
        step["description"] = text
    elif place == "preview":
        step["output_preview"] = text
    elif place == "metadata":
        step["metadata"] = {"note": {"deep": [text]}}
    elif place == "metadata_key":
        step["metadata"] = {text: 1}
    elif place == "tool":
        step["tool_call"] = {"tool_name": "t", "input_summary": text}
    elif place == "llm":
        step["llm_call"] = {"model": "m", "purpose": text}
    return base(steps=[step])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(_SECRETS)),
    data=st.data(),
    before=_PROSE,
    after=_PROSE,
    left=_SEP,
    right=_SEP,
    place=st.sampled_from(_PLACES),
)
def test_a_secret_of_any_kind_anywhere_in_a_trace_never_arrives(
    kind: str, data: st.DataObject, before: str, after: str, left: str, right: str, place: str
) -> None:
    """Whatever kind, wherever in the trace, amid whatever text: not in the encoded body."""
    secret = data.draw(_SECRETS[kind])
    text = f"{before}{left}{secret}{right}{after}"[:480]
    if secret not in text:
        return
    task = to_task(_placed(place, text), strict=False)
    body = encode_task(Redactor().task(task))
    assert secret.encode() not in body
    assert secret[4:20].encode() not in body  # nothing recognisable of it either


@settings(max_examples=150, deadline=None)
@given(
    text=st.lists(st.sampled_from(ORDINARY) | _PROSE, min_size=1, max_size=4).map(" ".join),
    place=st.sampled_from(_PLACES),
)
def test_text_without_secrets_arrives_unchanged(text: str, place: str) -> None:
    """Ordinary text anywhere in a trace comes through byte for byte."""
    task = to_task(_placed(place, text[:480]), strict=False)
    assert encode_task(Redactor().task(task)) == encode_task(task)


@settings(max_examples=100, deadline=None)
@given(
    blob=st.binary(min_size=8, max_size=64).map(
        lambda b: __import__("base64").b64encode(b).decode()
    ),
    digest=st.binary(min_size=16, max_size=32).map(bytes.hex),
    uuid=st.uuids().map(str),
)
def test_base64_digests_and_uuids_are_never_hit(blob: str, digest: str, uuid: str) -> None:
    """Random base64, hex digests and UUIDs (the shapes that fool entropy scanners) pass."""
    text = f"blob {blob} digest {digest} id {uuid}"
    assert Redactor("secrets").text(text) == text


def test_counts_are_by_kind_across_a_trace() -> None:
    """Every value redacted is counted once, under its kind."""
    task = to_task(
        base(
            name=SEEDED["openai"][0],
            description=SEEDED["aws_id"][0],
            input_summary="jane@example.com",
        )
    )
    redactor = Redactor("secrets,pii")
    out = redactor.task(task)
    assert isinstance(out, TaskData)
    assert redactor.counts() == {"api_key": 1, "aws_access_key_id": 1, "email": 1}
    assert msgspec.json.decode(encode_task(out))["input_summary"] == "[REDACTED:email]"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_never_waits_for_a_lock_its_parent_held() -> None:
    """A sender counting at the moment of a fork leaves the lock held in the child: the child
    gets a fresh one, and reading the counts there returns."""
    redactor = Redactor()
    redactor.text(SEEDED["openai"][0])
    with redactor._lock:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os._exit(0 if redactor.counts() == {"api_key": 1} else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
