#!/usr/bin/env python3
"""Round-trip probe of an SQS endpoint with SigV4-signed requests (stdlib only).

Usage: sqsprobe.py ENDPOINT ACCESS_KEY SECRET_KEY [REGION]

Creates a uniquely named queue, sends one message, receives it (checking the body),
deletes it and deletes the queue, over SQS's query protocol (form-encoded POSTs,
XML answers). Exit 0 when every step answered as SQS should; else exit 1 with the
step, the HTTP status and the body on stderr. Used by scripts/sqs.sh as its
readiness check (moto's port answers before its SQS backend is loaded) and by
`sqs.sh status`.
"""
import datetime
import hashlib
import hmac
import http.client
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def call(endpoint, access, secret, region, params, path="/"):
    """POSTs one signed SQS query-protocol request; returns (status, body bytes)."""
    u = urllib.parse.urlsplit(endpoint)
    body = urllib.parse.urlencode(params).encode()
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    headers = {
        "content-type": "application/x-www-form-urlencoded; charset=utf-8",
        "host": u.netloc,
        "x-amz-date": amz_date,
    }
    signed = ";".join(sorted(headers))
    canonical = "\n".join([
        "POST", path, "",
        "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
        signed, hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{day}/{region}/sqs/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = _hmac(("AWS4" + secret).encode(), day)
    for part in (region, "sqs", "aws4_request"):
        k = _hmac(k, part)
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                                f"SignedHeaders={signed}, Signature={sig}")
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def find(xml_bytes, tag):
    """Text of the first element named `tag` (any namespace), or None."""
    for el in ET.fromstring(xml_bytes).iter():
        if el.tag.rsplit("}", 1)[-1] == tag:
            return el.text
    return None


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    endpoint, access, secret = sys.argv[1:4]
    region = sys.argv[4] if len(sys.argv) == 5 else "us-east-1"
    name = "backfill-probe-" + os.urandom(4).hex()
    payload = "probe " + os.urandom(8).hex()

    def step(what, params, path="/"):
        try:
            status, got = call(endpoint, access, secret, region, params, path)
        except OSError as e:
            sys.exit(f"sqsprobe: {what}: {e}")
        if status != 200:
            sys.exit(f"sqsprobe: {what}: HTTP {status}: {got[:500]!r}")
        return got

    url = find(step("CreateQueue", {"Action": "CreateQueue", "QueueName": name}), "QueueUrl")
    if not url:
        sys.exit("sqsprobe: CreateQueue answered without a QueueUrl")
    qpath = urllib.parse.urlsplit(url).path or "/"
    step("SendMessage", {"Action": "SendMessage", "MessageBody": payload}, qpath)
    got = step("ReceiveMessage", {"Action": "ReceiveMessage", "MaxNumberOfMessages": "1"}, qpath)
    if find(got, "Body") != payload:
        sys.exit(f"sqsprobe: ReceiveMessage returned {got[:500]!r}, expected the body {payload!r}")
    receipt = find(got, "ReceiptHandle")
    step("DeleteMessage", {"Action": "DeleteMessage", "ReceiptHandle": receipt}, qpath)
    step("DeleteQueue", {"Action": "DeleteQueue"}, qpath)


if __name__ == "__main__":
    main()
