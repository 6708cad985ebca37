"""A tiny S3 client (AWS Signature V4, standard library only) for the object store's own checks.

It creates the buckets and lists what Velero and CNPG wrote, through a port-forward, so no S3 SDK is
needed on the host. Path-style addressing only (as MinIO and SeaweedFS are used here).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from restoredrill.errors import RestoreDrillError

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3Error(RestoreDrillError):
    """The object store answered with an error (its S3 error code is in the message)."""

    def __init__(self, message: str, *, status: int | None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message, remedy="check the object store's pod logs and the generated credentials Secret")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret_key: str, *, date: str, region: str, service: str = "s3") -> bytes:
    key = _hmac(("AWS4" + secret_key).encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def sign_request(
    *,
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    region: str,
    payload_sha256: str = EMPTY_SHA256,
    now: float | None = None,
) -> dict[str, str]:
    """The headers (Authorization, x-amz-date, x-amz-content-sha256, host) that sign one request."""
    parts = urllib.parse.urlsplit(url)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    date = stamp[:8]
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in sorted(query)
    )
    headers = {"host": parts.netloc, "x-amz-content-sha256": payload_sha256, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical_headers = "".join(f"{name}:{headers[name]}\n" for name in sorted(headers))
    canonical = "\n".join([
        method, urllib.parse.quote(parts.path or "/", safe="/-_.~"), canonical_query, canonical_headers, signed,
        payload_sha256,
    ])
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(signing_key(secret_key, date=date, region=region), to_sign.encode(),
                         hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return headers


@dataclass(frozen=True)
class S3Client:
    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    timeout: float = 30.0

    def __repr__(self) -> str:  # never show the secret key
        return f"S3Client(endpoint={self.endpoint!r}, region={self.region!r})"

    def _request(self, method: str, path: str, *, query: str = "", body: bytes | None = None) -> tuple[int, bytes]:
        url = self.endpoint.rstrip("/") + path + (f"?{query}" if query else "")
        payload = hashlib.sha256(body).hexdigest() if body is not None else EMPTY_SHA256
        headers = sign_request(method=method, url=url, access_key=self.access_key, secret_key=self.secret_key,
                               region=self.region, payload_sha256=payload)
        request = urllib.request.Request(url, method=method, headers=headers, data=body)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            body = error.read()
            code = _xml_text(body, "Code")
            raise S3Error(f"S3 {method} {path} -> {error.code} {code or ''}: {_xml_text(body, 'Message') or ''}",
                          status=error.code, code=code) from None
        except (urllib.error.URLError, OSError) as error:
            raise S3Error(f"S3 {method} {path}: cannot reach {self.endpoint}: {error}", status=None) from None

    def create_bucket(self, bucket: str) -> bool:
        """Create `bucket`; False when it already exists and is ours."""
        try:
            self._request("PUT", f"/{bucket}")
        except S3Error as error:
            if error.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return False
            raise
        return True

    def bucket_exists(self, bucket: str) -> bool:
        try:
            self._request("HEAD", f"/{bucket}")
        except S3Error as error:
            if error.status == 404:
                return False
            raise
        return True

    def get_object(self, bucket: str, key: str) -> bytes:
        return self._request("GET", f"/{bucket}/{urllib.parse.quote(key, safe='/')}")[1]

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        """Write an object (restoredrill's own buckets only: a fault test corrupts a drill's own backup)."""
        self._request("PUT", f"/{bucket}/{urllib.parse.quote(key, safe='/')}", body=data)

    def delete_object(self, bucket: str, key: str) -> None:
        """Remove an object (restoredrill's own buckets only: a fault test removes a drill's own backup file)."""
        self._request("DELETE", f"/{bucket}/{urllib.parse.quote(key, safe='/')}")

    def list_keys(self, bucket: str, *, prefix: str = "") -> list[str]:
        """Every key under `prefix` (follows continuation tokens)."""
        keys: list[str] = []
        token = ""
        while True:
            query = "list-type=2" + (f"&prefix={urllib.parse.quote(prefix, safe='')}" if prefix else "")
            if token:
                query += f"&continuation-token={urllib.parse.quote(token, safe='')}"
            _, body = self._request("GET", f"/{bucket}", query=query)
            root = ET.fromstring(body)
            keys += [node.text or "" for node in root.iter(f"{S3_NS}Key")]
            truncated = root.findtext(f"{S3_NS}IsTruncated") == "true"
            token = root.findtext(f"{S3_NS}NextContinuationToken") or ""
            if not truncated or not token:
                return keys


def _xml_text(body: bytes, tag: str) -> str | None:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    found = root.find(tag)
    if found is None:
        found = root.find(f"{S3_NS}{tag}")
    return found.text if found is not None else None
