"""S3 operations through boto3 against kiseki-gateway, as client/cli/tests/s3.rs runs it.

Usage: s3_ops.py ENDPOINT   (tenant A in KA_KEY/KA_SECRET, tenant B in KB_KEY/KB_SECRET)
Every check asserts; the first failure ends the run with a traceback.
"""

import concurrent.futures
import datetime
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request

import boto3
import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

ENDPOINT = sys.argv[1]
MIB = 1 << 20


def client(key, secret):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


A = client(os.environ["KA_KEY"], os.environ["KA_SECRET"])
B = client(os.environ["KB_KEY"], os.environ["KB_SECRET"])


def error_code(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except botocore.exceptions.ClientError as error:
        return error.response["Error"]["Code"]
    raise AssertionError(f"{call.__name__} succeeded; an error was expected")


def md5(data):
    return hashlib.md5(data).hexdigest()


def body(bucket, key, **kwargs):
    return A.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()


STARTED = time.monotonic()


def check(name, condition, detail=""):
    assert condition, f"{name}: {detail}"
    print(f"ok {name} ({time.monotonic() - STARTED:.1f} s)", flush=True)


def buckets():
    A.create_bucket(Bucket="alpha")
    A.head_bucket(Bucket="alpha")
    A.get_bucket_location(Bucket="alpha")
    names = [bucket["Name"] for bucket in A.list_buckets()["Buckets"]]
    check("list buckets", "alpha" in names, names)
    check("create twice", error_code(A.create_bucket, Bucket="alpha") == "BucketAlreadyOwnedByYou")
    for bad in ["ab", "Bad-Name", "-lead", "a..b", "192.168.0.1"]:
        check(f"invalid bucket name {bad}", error_code(A.create_bucket, Bucket=bad) == "InvalidBucketName")
    check("missing bucket", error_code(A.head_bucket, Bucket="nothing-here") in ("404", "NoSuchBucket"))
    check("versioning of an unversioned bucket", "Status" not in A.get_bucket_versioning(Bucket="alpha"))


def objects():
    sizes = [0, 1, 5 * MIB - 1, 5 * MIB, 5 * MIB + 1]
    for size in sizes:
        data = os.urandom(size)
        put = A.put_object(Bucket="alpha", Key=f"sizes/{size}", Body=data)
        check(f"put {size} B: etag is the MD5", put["ETag"].strip('"') == md5(data))
        got = A.get_object(Bucket="alpha", Key=f"sizes/{size}")
        check(f"get {size} B", got["Body"].read() == data and got["ContentLength"] == size)
    data = os.urandom(3 * MIB + 17)
    A.put_object(
        Bucket="alpha",
        Key="docs/report.bin",
        Body=data,
        ContentType="application/x-report",
        ContentEncoding="identity",
        ContentDisposition='attachment; filename="r.bin"',
        CacheControl="max-age=60",
        Metadata={"owner": "ml-team", "run": "42"},
    )
    head = A.head_object(Bucket="alpha", Key="docs/report.bin")
    check("content type", head["ContentType"] == "application/x-report", head)
    check("user metadata", head["Metadata"] == {"owner": "ml-team", "run": "42"}, head["Metadata"])
    check("stored headers", head["CacheControl"] == "max-age=60" and head["ContentEncoding"] == "identity")
    check("content disposition", head["ContentDisposition"] == 'attachment; filename="r.bin"')
    check("last modified", abs(head["LastModified"].timestamp() - time.time()) < 600)
    check("request id", "x-amz-request-id" in head["ResponseMetadata"]["HTTPHeaders"])
    # Ranges.
    check("range first byte", body("alpha", "docs/report.bin", Range="bytes=0-0") == data[:1])
    check("range middle", body("alpha", "docs/report.bin", Range="bytes=1000-1999999") == data[1000:2000000])
    check("range suffix", body("alpha", "docs/report.bin", Range="bytes=-10") == data[-10:])
    check("range open end", body("alpha", "docs/report.bin", Range=f"bytes={len(data) - 5}-") == data[-5:])
    ranged = A.get_object(Bucket="alpha", Key="docs/report.bin", Range="bytes=10-19")
    check("content range", ranged["ContentRange"] == f"bytes 10-19/{len(data)}", ranged.get("ContentRange"))
    check(
        "unsatisfiable range",
        error_code(A.get_object, Bucket="alpha", Key="docs/report.bin", Range=f"bytes={len(data) + 10}-") == "InvalidRange",
    )
    # Conditions.
    etag = head["ETag"]
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    check("If-Match", body("alpha", "docs/report.bin", IfMatch=etag) == data)
    check("If-Match wrong", error_code(A.get_object, Bucket="alpha", Key="docs/report.bin", IfMatch='"00"') == "PreconditionFailed")
    check("If-None-Match", error_code(A.get_object, Bucket="alpha", Key="docs/report.bin", IfNoneMatch=etag) == "304")
    check("If-None-Match other", body("alpha", "docs/report.bin", IfNoneMatch='"00"') == data)
    check("If-Modified-Since", error_code(A.head_object, Bucket="alpha", Key="docs/report.bin", IfModifiedSince=future) == "304")
    check("If-Modified-Since past", body("alpha", "docs/report.bin", IfModifiedSince=past) == data)
    check(
        "If-Unmodified-Since",
        error_code(A.get_object, Bucket="alpha", Key="docs/report.bin", IfUnmodifiedSince=past) == "PreconditionFailed",
    )
    # Conditional writes.
    check("put If-None-Match *", error_code(A.put_object, Bucket="alpha", Key="docs/report.bin", Body=b"x", IfNoneMatch="*") == "PreconditionFailed")
    check("missing key", error_code(A.get_object, Bucket="alpha", Key="docs/none") == "NoSuchKey")
    # Keys that are not paths are refused and change nothing.
    for bad in ["a//b", "docs/../x", "./x"]:
        check(f"key {bad!r} refused", error_code(A.put_object, Bucket="alpha", Key=bad, Body=b"x") == "InvalidArgument")
    check("object under an object refused", error_code(A.put_object, Bucket="alpha", Key="docs/report.bin/x", Body=b"x") == "InvalidArgument")
    check("refusals changed nothing", body("alpha", "docs/report.bin") == data)
    check("range of an empty object", error_code(A.get_object, Bucket="alpha", Key="sizes/0", Range="bytes=-5") == "InvalidRange")
    # Directory markers.
    A.put_object(Bucket="alpha", Key="empty-dir/", Body=b"")
    check("marker head", A.head_object(Bucket="alpha", Key="empty-dir/")["ContentLength"] == 0)
    # Copies: whole objects name the source's chunks; metadata copied or replaced.
    copy = A.copy_object(Bucket="alpha", Key="copies/report.bin", CopySource={"Bucket": "alpha", "Key": "docs/report.bin"})
    check("copy etag", copy["CopyObjectResult"]["ETag"] == etag)
    check("copy body", body("alpha", "copies/report.bin") == data)
    check("copy keeps metadata", A.head_object(Bucket="alpha", Key="copies/report.bin")["Metadata"]["owner"] == "ml-team")
    A.copy_object(
        Bucket="alpha",
        Key="copies/replaced.bin",
        CopySource="alpha/docs/report.bin",
        MetadataDirective="REPLACE",
        Metadata={"fresh": "yes"},
        ContentType="text/plain",
    )
    replaced = A.head_object(Bucket="alpha", Key="copies/replaced.bin")
    check("copy replaces metadata", replaced["Metadata"] == {"fresh": "yes"} and replaced["ContentType"] == "text/plain")
    check(
        "copy onto a marker key",
        error_code(A.copy_object, Bucket="alpha", Key="copies/dir/", CopySource="alpha/docs/report.bin") == "InvalidArgument",
    )
    check(
        "copy onto itself needs REPLACE",
        error_code(A.copy_object, Bucket="alpha", Key="docs/report.bin", CopySource="alpha/docs/report.bin") == "InvalidRequest",
    )
    check(
        "copy If-Match wrong",
        error_code(A.copy_object, Bucket="alpha", Key="copies/x", CopySource="alpha/docs/report.bin", CopySourceIfMatch='"00"')
        == "PreconditionFailed",
    )
    # Deletes.
    A.delete_object(Bucket="alpha", Key="copies/replaced.bin")
    check("deleted", error_code(A.head_object, Bucket="alpha", Key="copies/replaced.bin") == "404")
    A.delete_object(Bucket="alpha", Key="never/was")
    result = A.delete_objects(
        Bucket="alpha", Delete={"Objects": [{"Key": "sizes/0"}, {"Key": "sizes/1"}, {"Key": "not/there"}]}
    )
    check("delete objects", sorted(d["Key"] for d in result["Deleted"]) == ["not/there", "sizes/0", "sizes/1"], result)
    check("delete non-empty bucket", error_code(A.delete_bucket, Bucket="alpha") == "BucketNotEmpty")


def listings():
    A.create_bucket(Bucket="many")
    keys = [f"k/{index // 100:03d}/{index:05d}" for index in range(10_000)]
    keys += ["k-dash", "k.dot", "k/000-x", "a b/c+d.txt", "\u00fcber/\u00e9t\u00e9.txt", "top"]

    def put(key):
        A.put_object(Bucket="many", Key=key, Body=key.encode())

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))
    listed = []
    for page in A.get_paginator("list_objects_v2").paginate(Bucket="many", PaginationConfig={"PageSize": 1000}):
        listed += [item["Key"] for item in page.get("Contents", [])]
    expected = sorted(keys, key=lambda key: key.encode())
    check("10k keys in order, v2 pages", listed == expected, f"{len(listed)} keys")
    prefixes = []
    for page in A.get_paginator("list_objects_v2").paginate(Bucket="many", Prefix="k/", Delimiter="/"):
        prefixes += [item["Prefix"] for item in page.get("CommonPrefixes", [])]
    check("common prefixes", prefixes == [f"k/{index:03d}/" for index in range(100)], prefixes[:3])
    top = A.list_objects_v2(Bucket="many", Delimiter="/")
    check(
        "top level",
        [item["Key"] for item in top["Contents"]] == ["k-dash", "k.dot", "top"]
        and [item["Prefix"] for item in top["CommonPrefixes"]] == ["a b/", "k/", "\u00fcber/"],
        top,
    )
    empty_delimiter = A.list_objects_v2(Bucket="many", Prefix="k/099/", Delimiter="")
    check("empty delimiter is none", len(empty_delimiter["Contents"]) == 100 and "CommonPrefixes" not in empty_delimiter)
    after = A.list_objects_v2(Bucket="many", StartAfter="k/042/04250", MaxKeys=3)
    check("start after", [item["Key"] for item in after["Contents"]] == ["k/042/04251", "k/042/04252", "k/042/04253"])
    check("truncated", after["IsTruncated"] and after["KeyCount"] == 3)
    v1 = []
    for page in A.get_paginator("list_objects").paginate(Bucket="many", Prefix="k/05", PaginationConfig={"PageSize": 300}):
        v1 += [item["Key"] for item in page.get("Contents", [])]
    check("v1 markers", v1 == [key for key in expected if key.startswith("k/05")], len(v1))
    # Asked for explicitly, the encoding reaches the caller as the gateway wrote it.
    encoded = A.list_objects_v2(Bucket="many", Prefix="a b/", EncodingType="url")
    check("encoding type url", [item["Key"] for item in encoded["Contents"]] == ["a%20b/c%2Bd.txt"], encoded["Contents"])
    etags = {item["Key"]: item["ETag"].strip('"') for item in A.list_objects_v2(Bucket="many", Prefix="top")["Contents"]}
    check("listed etags are MD5s", etags == {"top": md5(b"top")})
    versions = A.list_object_versions(Bucket="many", Prefix="k/000/")
    check(
        "versions of an unversioned bucket",
        len(versions["Versions"]) == 100 and all(v["VersionId"] == "null" and v["IsLatest"] for v in versions["Versions"]),
    )
    check("missing prefix", A.list_objects_v2(Bucket="many", Prefix="zzz/")["KeyCount"] == 0)
    # Another delimiter, one item per page: pages move on past a common prefix.
    A.create_bucket(Bucket="dashes")
    for key in ["a-1", "a-2", "a-b/c", "b"]:
        A.put_object(Bucket="dashes", Key=key, Body=b"x")
    items = []
    for page in A.get_paginator("list_objects_v2").paginate(Bucket="dashes", Delimiter="-", PaginationConfig={"PageSize": 1}):
        items += [p["Prefix"] for p in page.get("CommonPrefixes", [])] + [o["Key"] for o in page.get("Contents", [])]
    check("pages past a common prefix", items == ["a-", "b"], items)


def complete(client, bucket, key, upload_id, parts):
    return client.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": number, "ETag": etag} for number, etag in parts]},
    )


def multipart():
    A.create_bucket(Bucket="parts")
    pieces = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(MIB + 3)]
    upload = A.create_multipart_upload(Bucket="parts", Key="big/object.bin", ContentType="application/x-big")
    upload_id = upload["UploadId"]
    etags = []
    for number, piece in enumerate(pieces, 1):
        etags.append((number, A.upload_part(Bucket="parts", Key="big/object.bin", UploadId=upload_id, PartNumber=number, Body=piece)["ETag"]))
    listed = A.list_parts(Bucket="parts", Key="big/object.bin", UploadId=upload_id)
    check("list parts", [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, 5 * MIB), (2, 5 * MIB), (3, MIB + 3)])
    uploads = A.list_multipart_uploads(Bucket="parts")
    check("list uploads", [(u["Key"], u["UploadId"]) for u in uploads["Uploads"]] == [("big/object.bin", upload_id)], uploads)
    done = complete(A, "parts", "big/object.bin", upload_id, etags)
    digests = b"".join(hashlib.md5(piece).digest() for piece in pieces)
    check("multipart etag", done["ETag"].strip('"') == f"{hashlib.md5(digests).hexdigest()}-3", done["ETag"])
    whole = b"".join(pieces)
    check("multipart body", body("parts", "big/object.bin") == whole)
    check("multipart content type", A.head_object(Bucket="parts", Key="big/object.bin")["ContentType"] == "application/x-big")
    check("upload gone", "Uploads" not in A.list_multipart_uploads(Bucket="parts"))
    # Upload part copy, with a range of the object just made.
    copy = A.create_multipart_upload(Bucket="parts", Key="copied.bin")["UploadId"]
    first = A.upload_part_copy(Bucket="parts", Key="copied.bin", UploadId=copy, PartNumber=1, CopySource="parts/big/object.bin", CopySourceRange=f"bytes=0-{5 * MIB - 1}")
    second = A.upload_part_copy(Bucket="parts", Key="copied.bin", UploadId=copy, PartNumber=2, CopySource="parts/big/object.bin", CopySourceRange=f"bytes={7 * MIB}-{11 * MIB + 2}")
    complete(A, "parts", "copied.bin", copy, [(1, first["CopyPartResult"]["ETag"]), (2, second["CopyPartResult"]["ETag"])])
    check("upload part copy", body("parts", "copied.bin") == whole[: 5 * MIB] + whole[7 * MIB : 11 * MIB + 3])
    # Refusals.
    small = A.create_multipart_upload(Bucket="parts", Key="small.bin")["UploadId"]
    p1 = A.upload_part(Bucket="parts", Key="small.bin", UploadId=small, PartNumber=1, Body=b"tiny")["ETag"]
    p2 = A.upload_part(Bucket="parts", Key="small.bin", UploadId=small, PartNumber=2, Body=b"tail")["ETag"]
    check("entity too small", error_code(complete, A, "parts", "small.bin", small, [(1, p1), (2, p2)]) == "EntityTooSmall")
    check("wrong part etag", error_code(complete, A, "parts", "small.bin", small, [(1, '"0123"')]) == "InvalidPart")
    check("part order", error_code(complete, A, "parts", "small.bin", small, [(2, p2), (1, p1)]) == "InvalidPartOrder")
    check("malformed xml", raw_post(f"/parts/small.bin?uploadId={small}", b"<CompleteMultipartUpload><Part>") == (400, "MalformedXML"))
    A.abort_multipart_upload(Bucket="parts", Key="small.bin", UploadId=small)
    check("aborted", error_code(A.list_parts, Bucket="parts", Key="small.bin", UploadId=small) == "NoSuchUpload")
    check("abort left no object", error_code(A.head_object, Bucket="parts", Key="small.bin") == "404")
    # An upload's directory outlives the deletion of its last object.
    kept = A.create_multipart_upload(Bucket="parts", Key="d/big")["UploadId"]
    A.put_object(Bucket="parts", Key="d/x", Body=b"x")
    A.delete_object(Bucket="parts", Key="d/x")
    e1 = A.upload_part(Bucket="parts", Key="d/big", UploadId=kept, PartNumber=1, Body=b"late part")["ETag"]
    complete(A, "parts", "d/big", kept, [(1, e1)])
    check("upload outlives a pruned sibling", body("parts", "d/big") == b"late part")
    # Concurrent uploads of one key: the object is one of them, whole.
    candidates = {}

    def one(index):
        data = bytes([index]) * (5 * MIB) + os.urandom(1000)
        candidates[index] = data
        upload_id = A.create_multipart_upload(Bucket="parts", Key="contended")["UploadId"]
        e1 = A.upload_part(Bucket="parts", Key="contended", UploadId=upload_id, PartNumber=1, Body=data[: 5 * MIB])["ETag"]
        e2 = A.upload_part(Bucket="parts", Key="contended", UploadId=upload_id, PartNumber=2, Body=data[5 * MIB :])["ETag"]
        complete(A, "parts", "contended", upload_id, [(1, e1), (2, e2)])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(4)))
    check("concurrent uploads of one key", body("parts", "contended") in candidates.values())


def raw_post(path, payload):
    """A signed POST with a body botocore would never send."""
    credentials = Credentials(os.environ["KA_KEY"], os.environ["KA_SECRET"])
    request = AWSRequest(method="POST", url=ENDPOINT + path, data=payload)
    request.headers["x-amz-content-sha256"] = hashlib.sha256(payload).hexdigest()
    SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    http = urllib.request.Request(prepared.url, data=payload, method="POST", headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(http) as response:
            return response.status, ""
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        code = text.split("<Code>")[1].split("</Code>")[0] if "<Code>" in text else ""
        return error.code, code


def security():
    wrong = client(os.environ["KA_KEY"], "not-the-secret")
    check("wrong secret", error_code(wrong.list_buckets) == "SignatureDoesNotMatch")
    unknown = client("AKIDNOTAKEY000000000", "whatever")
    check("unknown key", error_code(unknown.list_buckets) == "InvalidAccessKeyId")
    url = A.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "docs/report.bin"}, ExpiresIn=300)
    with urllib.request.urlopen(url) as response:
        check("presigned get", response.status == 200 and len(response.read()) == 3 * MIB + 17)
    expired = A.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "docs/report.bin"}, ExpiresIn=1)
    time.sleep(2.5)
    try:
        urllib.request.urlopen(expired)
        raise AssertionError("an expired presigned URL was served")
    except urllib.error.HTTPError as error:
        check("expired presign", error.code == 403 and "AccessDenied" in error.read().decode())
    form = urllib.request.Request(
        ENDPOINT + "/alpha", data=b"--x--\r\n", method="POST", headers={"Content-Type": "multipart/form-data; boundary=x"}
    )
    try:
        urllib.request.urlopen(form)
        raise AssertionError("a POST form upload was accepted")
    except urllib.error.HTTPError as error:
        check("browser POST refused", error.code == 501)
    # Tenant B sees nothing of tenant A's buckets and cannot touch them.
    check("other tenant's bucket list", "alpha" not in [b["Name"] for b in B.list_buckets()["Buckets"]])
    check("other tenant head", error_code(B.head_bucket, Bucket="alpha") == "403")
    check("other tenant get", error_code(B.get_object, Bucket="alpha", Key="docs/report.bin") == "AccessDenied")
    check("other tenant put", error_code(B.put_object, Bucket="alpha", Key="intruder", Body=b"x") == "AccessDenied")
    check("other tenant delete", error_code(B.delete_object, Bucket="alpha", Key="docs/report.bin") == "AccessDenied")
    check("other tenant create", error_code(B.create_bucket, Bucket="alpha") == "BucketAlreadyExists")
    check(
        "other tenant copy source",
        error_code(B.copy_object, Bucket="beta-own", Key="x", CopySource="alpha/docs/report.bin") in ("AccessDenied", "NoSuchBucket"),
    )
    B.create_bucket(Bucket="beta-own")
    check(
        "copy from another tenant",
        error_code(B.copy_object, Bucket="beta-own", Key="x", CopySource="alpha/docs/report.bin") == "AccessDenied",
    )
    check("nothing changed", A.head_object(Bucket="alpha", Key="docs/report.bin")["ContentLength"] == 3 * MIB + 17)
    check("no intruder", error_code(A.head_object, Bucket="alpha", Key="intruder") == "404")

def all_versions(bucket, **kwargs):
    """Every (key, version id, latest, is marker) of a bucket, page by page."""
    found = []
    for page in A.get_paginator("list_object_versions").paginate(Bucket=bucket, **kwargs):
        rows = [(v["Key"], v["VersionId"], v["IsLatest"], False, v["LastModified"]) for v in page.get("Versions", [])]
        rows += [(m["Key"], m["VersionId"], m["IsLatest"], True, m["LastModified"]) for m in page.get("DeleteMarkers", [])]
        # Within a page S3 interleaves versions and markers by key, newest first; the two
        # lists come apart in the XML, so order them back by key and page position.
        found.extend(rows)
    return found


def versioning():
    A.create_bucket(Bucket="history")
    A.put_object(Bucket="history", Key="doc/a.txt", Body=b"v0")
    A.put_bucket_versioning(Bucket="history", VersioningConfiguration={"Status": "Enabled"})
    check("versioning enabled", A.get_bucket_versioning(Bucket="history")["Status"] == "Enabled")
    check(
        "bad versioning status",
        error_code(A.put_bucket_versioning, Bucket="history", VersioningConfiguration={"Status": "Off"}) == "MalformedXML",
    )
    ids = [A.put_object(Bucket="history", Key="doc/a.txt", Body=f"v{n}".encode())["VersionId"] for n in (1, 2, 3)]
    check("fresh version ids", len(set(ids)) == 3 and "null" not in ids, ids)
    check("latest version", body("history", "doc/a.txt") == b"v3")
    check("get by version", body("history", "doc/a.txt", VersionId=ids[0]) == b"v1")
    check("object before versioning is null", body("history", "doc/a.txt", VersionId="null") == b"v0")
    head = A.head_object(Bucket="history", Key="doc/a.txt", VersionId=ids[1])
    check("head by version", head["VersionId"] == ids[1] and head["ContentLength"] == 2 and head["ETag"] == f'"{md5(b"v2")}"')
    check("get shows its version", A.get_object(Bucket="history", Key="doc/a.txt")["VersionId"] == ids[2])
    unknown = "0" * 32
    check("unknown version", error_code(A.get_object, Bucket="history", Key="doc/a.txt", VersionId=unknown) == "NoSuchVersion")
    check("malformed version id", error_code(A.get_object, Bucket="history", Key="doc/a.txt", VersionId="../x") == "InvalidArgument")
    rows = [(key, version, latest) for key, version, latest, _, _ in all_versions("history", Prefix="doc/")]
    expected = [("doc/a.txt", ids[2], True), ("doc/a.txt", ids[1], False), ("doc/a.txt", ids[0], False), ("doc/a.txt", "null", False)]
    check("versions newest first", rows == expected, rows)

    deleted = A.delete_object(Bucket="history", Key="doc/a.txt")
    marker = deleted["VersionId"]
    check("delete makes a marker", deleted["DeleteMarker"] and marker not in ids + ["null"], deleted)
    check("marked key is gone", error_code(A.get_object, Bucket="history", Key="doc/a.txt") == "NoSuchKey")
    check("marked key not listed", "Contents" not in A.list_objects_v2(Bucket="history", Prefix="doc/"))
    check("versions outlive the marker", body("history", "doc/a.txt", VersionId=ids[2]) == b"v3")
    check(
        "a marker has no body",
        error_code(A.get_object, Bucket="history", Key="doc/a.txt", VersionId=marker) == "MethodNotAllowed",
    )
    rows = all_versions("history", Prefix="doc/")
    markers = [(version, latest) for _, version, latest, is_marker, _ in rows if is_marker]
    check("marker is latest", markers == [(marker, True)] and sum(row[2] for row in rows) == 1, rows)
    undone = A.delete_object(Bucket="history", Key="doc/a.txt", VersionId=marker)
    check("delete the marker", undone["DeleteMarker"] and undone["VersionId"] == marker)
    check("object is back", body("history", "doc/a.txt") == b"v3")
    A.delete_object(Bucket="history", Key="doc/a.txt", VersionId=ids[2])
    check("previous version promoted", body("history", "doc/a.txt") == b"v2")
    check(
        "deleted version is gone",
        error_code(A.get_object, Bucket="history", Key="doc/a.txt", VersionId=ids[2]) == "NoSuchVersion",
    )
    A.delete_object(Bucket="history", Key="doc/a.txt", VersionId=ids[0])
    rows = [(version, latest) for _, version, latest, _, _ in all_versions("history", Prefix="doc/a")]
    check("noncurrent version deleted", rows == [(ids[1], True), ("null", False)], rows)
    A.delete_object(Bucket="history", Key="doc/a.txt", VersionId=unknown)
    check("deleting an unknown version changes nothing", body("history", "doc/a.txt") == b"v2")

    copied = A.copy_object(
        Bucket="history", Key="doc/copy.txt", CopySource={"Bucket": "history", "Key": "doc/a.txt", "VersionId": "null"}
    )
    check("copy of an old version", body("history", "doc/copy.txt") == b"v0" and copied["CopySourceVersionId"] == "null")
    check("copy gets a version", len(copied["VersionId"]) == 32)
    long_key = "x" * 255
    check("versioned key segment limit", error_code(A.put_object, Bucket="history", Key=long_key, Body=b"x") == "KeyTooLongError")

    # Multipart uploads complete into a new version.
    upload = A.create_multipart_upload(Bucket="history", Key="doc/a.txt")["UploadId"]
    part = A.upload_part(Bucket="history", Key="doc/a.txt", UploadId=upload, PartNumber=1, Body=b"m" * 1000)
    done = complete(A, "history", "doc/a.txt", upload, [(1, part["ETag"])])
    check("multipart version", len(done["VersionId"]) == 32 and body("history", "doc/a.txt") == b"m" * 1000)
    check("replaced by multipart, kept", body("history", "doc/a.txt", VersionId=ids[1]) == b"v2")

    # Writers racing on one key lose no version.
    def put(index):
        return A.put_object(Bucket="history", Key="race", Body=f"r{index}".encode())["VersionId"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        raced = list(pool.map(put, range(16)))
    rows = [row for row in all_versions("history", Prefix="race")]
    check("racing writers keep every version", sorted(row[1] for row in rows) == sorted(raced), rows)
    check("one latest", sum(row[2] for row in rows) == 1)
    bodies = {body("history", "race", VersionId=version) for version in raced}
    check("every raced version reads back", bodies == {f"r{index}".encode() for index in range(16)})

    # Pages of versions: markers across keys, delimiters.
    for key in range(5):
        for _ in range(3):
            A.put_object(Bucket="history", Key=f"page/{key}", Body=os.urandom(10))
    A.delete_object(Bucket="history", Key="page/2")
    paged = all_versions("history", Prefix="page/", MaxKeys=4)
    full = all_versions("history", Prefix="page/")
    check("paged versions", len(paged) == 16 and sorted(paged) == sorted(full), paged)
    top = A.list_object_versions(Bucket="history", Delimiter="/")
    prefixes = [prefix["Prefix"] for prefix in top.get("CommonPrefixes", [])]
    check("version prefixes", prefixes == ["doc/", "page/"], prefixes)
    check("top-level versions", {v["Key"] for v in top["Versions"]} == {"race"})
    check("current listing unchanged", [o["Key"] for o in A.list_objects_v2(Bucket="history", Prefix="page/")["Contents"]] == ["page/0", "page/1", "page/3", "page/4"])

    # Suspended: writes replace the null version and keep the others.
    A.put_bucket_versioning(Bucket="history", VersioningConfiguration={"Status": "Suspended"})
    check("versioning suspended", A.get_bucket_versioning(Bucket="history")["Status"] == "Suspended")
    A.put_object(Bucket="history", Key="doc/a.txt", Body=b"s1")
    A.put_object(Bucket="history", Key="doc/a.txt", Body=b"s2")
    rows = [(version, latest) for _, version, latest, _, _ in all_versions("history", Prefix="doc/a")]
    check("suspended writes replace null", rows[0] == ("null", True) and len(rows) == 3 and rows.count(("null", False)) == 0, rows)
    check("suspended null version", body("history", "doc/a.txt", VersionId="null") == b"s2")
    check("still readable", body("history", "doc/a.txt", VersionId=ids[1]) == b"v2")

    check("versions keep the bucket", error_code(A.delete_bucket, Bucket="history") == "BucketNotEmpty")
    # Empty the bucket the way clients do: every version and marker, by id.
    everything = [{"Key": key, "VersionId": version} for key, version, _, _, _ in all_versions("history")]
    for start in range(0, len(everything), 1000):
        result = A.delete_objects(Bucket="history", Delete={"Objects": everything[start : start + 1000]})
        check("batch delete of versions", "Errors" not in result, result.get("Errors"))
    check("no versions left", all_versions("history") == [])
    A.delete_bucket(Bucket="history")
    A.create_bucket(Bucket="history")
    check("a new bucket starts unversioned", "Status" not in A.get_bucket_versioning(Bucket="history"))
    check("with no versions", all_versions("history") == [])
    # A key written once after versioning is on lists its own version id.
    A.put_bucket_versioning(Bucket="history", VersioningConfiguration={"Status": "Enabled"})
    first = A.put_object(Bucket="history", Key="once", Body=b"1")["VersionId"]
    check("a single version is listed by its id", all_versions("history")[0][1:3] == (first, True))
    A.delete_object(Bucket="history", Key="once", VersionId=first)
    check("and deleted by it", all_versions("history") == [])
    A.delete_bucket(Bucket="history")


for step in [buckets, objects, listings, multipart, versioning, security]:
    step()
    print(f"step {step.__name__} done ({time.monotonic() - STARTED:.1f} s)", flush=True)
print("all s3 checks passed")
