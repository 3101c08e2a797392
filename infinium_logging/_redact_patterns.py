"""What redaction looks for: the patterns of secrets and PII, and the cheap checks before them.

The patterns are hand-written rather than taken from detect-secrets or gitleaks:
both are far larger than a run-time dependency of a logging library may be, and
their rule sets favour recall (a scanner's user reviews every hit) where a trace
needs precision (a false positive destroys content nobody reviews).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

from .sanitise import TRUNCATION_MARK

__all__ = [
    "KEPT_PREFIX",
    "PATTERNS",
    "PII",
    "PII_CHECKS",
    "PII_CHECKS_BYTES",
    "RAW_CHECKS",
    "RAW_CHECKS_BYTES",
    "SECRET_CHECKS",
    "SECRET_CHECKS_BYTES",
    "SECRET_NAME",
    "combined",
    "hinted",
    "pii_ok",
    "renumbered",
    "secret_name",
]

# Names of keys whose values are secrets, matched on the whole key (lower case, "-" read as
# "_"): "token" and "access_token" are, "max_tokens", "token_count" and "tokenizer" are not.
SECRET_NAME: Final = re.compile(
    r"(?:.*_)?(?:password|passwd|pwd|passphrase|secret|secret_key|client_secret|token"
    r"|api_key|apikey|access_key|secret_access_key|private_key|authorization|auth|credentials?"
    r"|cookie|set_cookie|session_id|x_api_key)"
)
# Where a camelCase or PascalCase key changes words: accessToken, SecretAccessKey, OpenAIApiKey.
_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def secret_name(key: str) -> bool:
    """Whether a key names a secret, however it is written: ``api_key``, ``X-Api-Key``,
    ``accessToken``, ``SecretAccessKey`` (not ``max_tokens``, ``tokenCount``, ``author``)."""
    return SECRET_NAME.fullmatch(_CAMEL.sub("_", key).lower().replace("-", "_")) is not None


# A name in free text may run on from a word before it (accessToken, client-secret, mytoken).
_NAME_WORDS: Final = (
    r"[A-Za-z0-9_-]*?(?:password|passwd|passphrase|secret|token|api[_-]?key|apikey"
    r"|access[_-]?key|private[_-]?key|authorization|client[_-]?secret)"
)
# Where a key ends: at anything that cannot be part of it (not inside a longer word).
_KEY_END: Final = r"(?![A-Za-z0-9_-])"
# Where a free-form value ends: whitespace, quotes, brackets, separators.
_END: Final = r"""(?![^\s"'`,;&(){}\[\]<>|])"""

PATTERNS: Final = (
    # Private key blocks, to their END line, or to the end of a text cut short.
    (
        "private_key",
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
        r"(?:.*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|.*\Z)",
    ),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    # OpenAI (sk-, sk-proj-, sk-svcacct-) and Anthropic (sk-ant-api03-) keys.
    ("api_key", r"(?<![\w-])sk-(?:[A-Za-z0-9]+-){0,3}[A-Za-z0-9_-]{20,}" + _KEY_END),
    ("api_key", r"(?<![\w-])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}" + _KEY_END),  # Stripe
    ("api_key", r"(?<![\w-])AIza[A-Za-z0-9_-]{35}" + _KEY_END),  # Google
    (
        "api_key",
        r"(?<![\w-])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,})" + _KEY_END,
    ),
    ("api_key", r"(?<![\w-])xox[abposr]-[A-Za-z0-9-]{10,}" + _KEY_END),  # Slack
    ("aws_access_key_id", r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
    # A secret cut short by truncation: what is left of a known prefix still goes.
    (
        "api_key",
        r"(?<![\w-])(?:sk-|sk_live_|sk_test_|rk_live_|AIza|gh[pousr]_|github_pat_|xox[abposr]-"
        r"|AKIA|ASIA|eyJ)[A-Za-z0-9_.\-]*(?=" + re.escape(TRUNCATION_MARK) + r"\Z)",
    ),
)
# Patterns whose match keeps a prefix (a scheme, a key's name, the word Bearer) and replaces
# only the group named "v".
KEPT_PREFIX: Final = (
    (
        "password",
        r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s/:@\"'<>]{0,256}:(?P<v__N__>[^\s/@\"'<>]{1,256})@",
    ),
    ("bearer_token", r"(?i:\bbearer[ \t]+)(?P<v__N__>[A-Za-z0-9._~+/=-]{16,})" + _END),
    (
        "aws_secret_key",
        r"(?i:aws[\w.-]{0,20}(?:secret|key)[\w.-]{0,20}[\"']?\s*[:=]\s*[\"']?)"
        r"(?P<v__N__>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
    ),
    # name=value, name: value, "name": "value" in free text: the value must be quoted or
    # hold a digit or symbol, so that code (password = new_password) passes.
    (
        "secret",
        r"(?i:\b" + _NAME_WORDS + r")\b[\"']?[ \t]*[:=][ \t]*"
        r"(?:(?P<q__N__>[\"'])(?P<v__N__>[^\"'\r\n]{3,256})(?P=q__N__)"
        r"|(?P<w__N__>(?=[^\s\"'`,;&(){}\[\]<>]*[0-9!#$%*+/=?@^~])"
        r"[^\s\"'`,;&(){}\[\]<>]{6,256})" + _END + ")",
    ),
)
PII: Final = (
    (
        "email",
        r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*"
        r"\.[A-Za-z]{2,24}(?![\w-])",
    ),
    ("iban", r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
    ("card", r"(?<![\w-])(?:[0-9][ -]?){12,18}[0-9](?![\w-])"),
    (
        "phone",
        r"(?<![\w+])(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?)?"
        r"[0-9]{2,4}(?:[ .-][0-9]{2,4}){1,4}(?![\w-])",
    ),
)
# _redact_scan spells these hints again for Hyperscan (one pass for all); a change here is
# made there too (tests/test_redact_scan.py holds both to the same answers).
# Checks first, over the lower-cased text (or a whole encoded trace): text without any of
# these cannot hold what the patterns above find (each needs one of them), and nearly every
# trace is such.  Each is one search at C speed: Python's re has no multi-literal search, and
# an alternation of these words costs some fifty times as much as all of them one by one.
# What the scan costs is the number of passes over the text, so hints that share a rare
# letter share a pass, and a word is looked for from its rarest part, the rest checked
# behind it (re skips to a literal prefix several times as fast as ``in`` finds a short
# needle whose first letter is common).
_HINT_PATTERNS: Final = (
    # sk-, cookie, token (not tokens), api_key / apikey / access_key / private_key, and
    # Stripe's k_live_ / k_test_: one pass, from their "k".
    r"k(?:-(?<=sk-)|ie(?<=cookie)|en(?<=token)(?!s)"
    r"|ey(?:(?<=api[_-]key)|(?<=apikey)|(?<=access[_-]key)|(?<=accesskey)"
    r"|(?<=private[_-]key)|(?<=privatekey))|_(?:live|test)_)",
    r"z(?:a(?<=aiza)|(?<=authoriz))",
    r"xox",
    r"j(?<=eyj)",
    r"cre(?:t(?<=secret)|dential)",
    r"ss(?:w(?<=passw)|ion(?<=session)|phrase(?<=passphrase))",
    r"pwd",
    r"earer(?<=bearer)",
    # An AWS secret key under a name with neither "secret" nor "access_key" in it (aws_key).
    r"aws[\w.-]{0,20}key",
    # A key named auth or x_auth (not author, authenticate: "authoriz" is looked for above).
    # After it, one letter may be a MessagePack int value read as one, never two.
    r"auth(?<![a-z0-9]auth)(?![a-z]{2})",
    # A URL's password ("@" alone: a byte MessagePack uses as a length, and every e-mail).
    r"://[^\s/@\"']{0,256}@",
    # GitHub's ghp_ / github_pat_ and a private key's -----begin: one pass, from their "g".
    r"g(?:h[pousr]_|ithub_pat_|in(?<=-----begin))",
)
_PII_HINTS: Final = ("@",)
_PII_HINT_PATTERNS: Final = (r"[0-9][0-9 ().-]{5,}[0-9]", r"[a-z]{2}[0-9]{2}")


def _checks(literals: Iterable[str], patterns: Iterable[str], kind: type) -> tuple[Any, ...]:
    """Literal searches (``in``) and compiled patterns, for ``str`` or ``bytes`` text."""
    if kind is bytes:
        return (
            *(literal.encode() for literal in literals),
            *(re.compile(pattern.encode()).search for pattern in patterns),
        )
    return (*literals, *(re.compile(pattern).search for pattern in patterns))


# AWS key ids are upper case: looked for in the text as it is (an upper-case letter is rare,
# a lower-case "a" is everywhere).
# So is the "Auth" of a camelCase key (basicAuth, xAuth), which the lower-cased text cannot
# tell from a word that merely ends in "auth".
_RAW_PATTERNS: Final = (r"A(?:KIA|SIA|BIA|CCA|uth(?![a-z]{2}))",)
SECRET_CHECKS: Final = _checks((), _HINT_PATTERNS, str)
SECRET_CHECKS_BYTES: Final = _checks((), _HINT_PATTERNS, bytes)
RAW_CHECKS: Final = _checks((), _RAW_PATTERNS, str)
RAW_CHECKS_BYTES: Final = _checks((), _RAW_PATTERNS, bytes)
PII_CHECKS: Final = _checks(_PII_HINTS, _PII_HINT_PATTERNS, str)
PII_CHECKS_BYTES: Final = _checks(_PII_HINTS, _PII_HINT_PATTERNS, bytes)


def hinted(text: Any, checks: tuple[Any, ...]) -> bool:
    for check in checks:
        if (check in text) if type(check) is str or type(check) is bytes else check(text):
            return True
    return False


def combined(patterns: Iterable[tuple[str, str]], start: int) -> tuple[re.Pattern[str], list[str]]:
    parts = []
    kinds = []
    for index, (kind, pattern) in enumerate(patterns, start):
        parts.append(f"(?P<k{index}>{pattern})")
        kinds.append(kind)
    return re.compile("|".join(parts), re.DOTALL), kinds


def renumbered(pattern: str, index: int) -> str:
    # Each alternative of the combined pattern names its groups apart (v4, q4, ...).
    return pattern.replace("__N__", str(index))


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in moved)
    return int(number) % 97 == 1


def pii_ok(kind: str, text: str) -> bool:
    """Whether a candidate of a PII kind passes its check (checksums, digit counts)."""
    if kind == "card":
        digits = text.replace(" ", "").replace("-", "")
        return 13 <= len(digits) <= 19 and _luhn(digits)
    if kind == "iban":
        return _iban_ok(text)
    if kind == "phone":
        count = sum(char.isdigit() for char in text)
        # A + or a parenthesised area code says phone; else it takes 10-15 digits in groups
        # (dates and versions have fewer, and use other separators).
        if text.startswith("+") or "(" in text:
            return 7 <= count <= 15
        # Without them, only groups of three or more digits (dates and times have pairs).
        groups = re.split(r"[ .-]", text)
        return 10 <= count <= 15 and all(len(group) >= 3 for group in groups)
    return True
