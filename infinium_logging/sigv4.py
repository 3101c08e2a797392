"""AWS Signature Version 4 for Infino requests: the signed headers of one attempt."""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote

__all__ = ["ALGORITHM", "REGION", "SERVICE", "SIGNED_HEADERS", "amz_date", "sign"]

# Written here rather than taken from botocore: a run-time dependency of tens of megabytes for
# forty lines of hashing.  botocore's SigV4Auth checks every signature in the tests instead.

ALGORITHM: Final = "AWS4-HMAC-SHA256"
#: Fixed by Infino: its SDK signs every request for this region and service.
REGION: Final = "us-east-1"
SERVICE: Final = "es"
#: Exactly the headers Infino's SDK signs, in canonical order.
SIGNED_HEADERS: Final = "content-type;host;x-amz-content-sha256;x-amz-date"


def amz_date(moment: datetime.datetime) -> str:
    """``moment`` as ``X-Amz-Date`` writes it: ``YYYYMMDD'T'HHMMSS'Z'`` in UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y%m%dT%H%M%SZ")


def sign(
    method: str,
    host: str,
    path: str,
    body: bytes,
    *,
    content_type: str,
    access_key: str,
    secret_key: str,
    when: datetime.datetime,
    query: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers that sign one request: ``X-Amz-Date``, ``X-Amz-Content-Sha256``,
    ``Content-Type`` and ``Authorization`` (``Host`` is sent by the HTTP client; ``host`` must
    be what it sends, with the port when it is not the scheme's default).

    Called again for every attempt: a signature is only valid near its ``X-Amz-Date``.
    """
    stamp = amz_date(when)
    day = stamp[:8]
    payload_hash = hashlib.sha256(body).hexdigest()
    canonical = "\n".join(
        (
            method.upper(),
            quote(path or "/", safe="/~"),
            _canonical_query(query or {}),
            f"content-type:{content_type.strip()}\n"
            f"host:{host.strip()}\n"
            f"x-amz-content-sha256:{payload_hash}\n"
            f"x-amz-date:{stamp}\n",
            SIGNED_HEADERS,
            payload_hash,
        )
    )
    scope = f"{day}/{REGION}/{SERVICE}/aws4_request"
    to_sign = "\n".join(
        (ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest())
    )
    signature = hmac.new(_signing_key(secret_key, day), to_sign.encode("utf-8"), hashlib.sha256)
    return {
        "X-Amz-Date": stamp,
        "X-Amz-Content-Sha256": payload_hash,
        "Content-Type": content_type,
        "Authorization": (
            f"{ALGORITHM} Credential={access_key}/{scope}, "
            f"SignedHeaders={SIGNED_HEADERS}, Signature={signature.hexdigest()}"
        ),
    }


def _signing_key(secret_key: str, day: str) -> bytes:
    key = _hmac(f"AWS4{secret_key}".encode(), day)
    for part in (REGION, SERVICE, "aws4_request"):
        key = _hmac(key, part)
    return key


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _canonical_query(query: Mapping[str, str]) -> str:
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in query.items())
    return "&".join(f"{k}={v}" for k, v in pairs)
