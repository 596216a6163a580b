#!/usr/bin/env python3
"""Round-trip probe of an S3 endpoint with SigV4-signed requests (stdlib only).

Usage: s3probe.py ENDPOINT ACCESS_KEY SECRET_KEY [REGION]

Creates a uniquely named bucket, puts, gets and deletes one object, deletes the
bucket. Exit 0 when every step answered as S3 should; else exit 1 with the step,
the HTTP status and the body on stderr. Used by scripts/s3.sh as its readiness
check (a port that answers is not yet a store that writes) and by `s3.sh status`.
"""
import datetime
import hashlib
import hmac
import http.client
import os
import sys
import urllib.parse


def sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def request(endpoint, access, secret, region, method, path, body=b""):
    u = urllib.parse.urlsplit(endpoint)
    host = u.netloc
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    canonical_uri = urllib.parse.quote(path, safe="/-_.~")
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([
        method, canonical_uri, "",
        "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
        signed, payload_hash,
    ])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = sign(("AWS4" + secret).encode(), day)
    k = sign(k, region)
    k = sign(k, "s3")
    k = sign(k, "aws4_request")
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                                f"SignedHeaders={signed}, Signature={sig}")
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
    try:
        conn.request(method, canonical_uri, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    endpoint, access, secret = sys.argv[1:4]
    region = sys.argv[4] if len(sys.argv) == 5 else "us-east-1"
    bucket = "backfill-probe-" + os.urandom(4).hex()
    body = b"probe " + os.urandom(8).hex().encode()
    steps = [
        ("create bucket", "PUT", f"/{bucket}", b"", (200,)),
        ("put object", "PUT", f"/{bucket}/probe.txt", body, (200,)),
        ("get object", "GET", f"/{bucket}/probe.txt", b"", (200,)),
        ("delete object", "DELETE", f"/{bucket}/probe.txt", b"", (204, 200)),
        ("delete bucket", "DELETE", f"/{bucket}", b"", (204, 200)),
    ]
    for name, method, path, data, ok in steps:
        try:
            status, got = request(endpoint, access, secret, region, method, path, data)
        except OSError as e:
            print(f"s3probe: {name} {method} {path}: {e}", file=sys.stderr)
            sys.exit(1)
        if status not in ok:
            print(f"s3probe: {name} {method} {path}: HTTP {status}: {got[:500]!r}", file=sys.stderr)
            sys.exit(1)
        if name == "get object" and got != body:
            print(f"s3probe: get object returned {got[:100]!r}, expected {body!r}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
