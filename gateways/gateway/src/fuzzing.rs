//! The request-parsing entry point of the gateway's fuzz target (`gateways/gateway/fuzz`,
//! run by `scripts/fuzz.sh`): arbitrary bytes are parsed as an HTTP/1.1 request and
//! handed to the s3s service (routing, header and query parsing, SigV4 checks, XML
//! bodies) over an S3 implementation that runs the gateway's own parsers (key paths,
//! bucket names, continuation tokens, copy ranges, write conditions) on whatever reaches
//! it. Nothing may panic; every outcome is an answer.

use std::sync::OnceLock;

use futures::StreamExt;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

use crate::s3::{list, multipart, objects, paths};

/// Credentials the fuzz inputs may sign with (seeds use them).
pub const ACCESS_KEY: &str = "AKIAFUZZFUZZFUZZFUZZ";
/// The secret of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "fuzz-secret-fuzz-secret-fuzz-secret-0000";

struct Parsers;

#[async_trait::async_trait]
impl S3 for Parsers {
    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        paths::check_bucket_name(&req.input.bucket)?;
        paths::key_path(&req.input.key)?;
        objects::write_condition(req.input.if_match.as_ref(), req.input.if_none_match.as_ref())?;
        if let Some(mut body) = req.input.body {
            while let Some(piece) = body.next().await {
                piece.map_err(|error| s3_error!(IncompleteBody, "{error}"))?;
            }
        }
        Ok(S3Response::new(PutObjectOutput::default()))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        paths::check_bucket_name(&req.input.bucket)?;
        paths::key_path(&req.input.key)?;
        if let Some(range) = &req.input.range {
            range.check(1 << 20)?;
        }
        Err(s3_error!(NoSuchKey))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        paths::check_bucket_name(&req.input.bucket)?;
        if let Some(token) = &req.input.continuation_token {
            list::decode_token(token)?;
        }
        Err(s3_error!(NoSuchBucket))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        paths::key_path(&req.input.key)?;
        multipart::copy_range(req.input.copy_source_range.as_deref(), 1 << 30)?;
        Err(s3_error!(NoSuchUpload))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        paths::key_path(&req.input.key)?;
        Err(s3_error!(NoSuchUpload))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        for object in &req.input.delete.objects {
            let _ = paths::key_path(&object.key);
        }
        Ok(S3Response::new(DeleteObjectsOutput::default()))
    }
}

fn service() -> &'static (tokio::runtime::Runtime, S3Service) {
    static SERVICE: OnceLock<(tokio::runtime::Runtime, S3Service)> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("a fuzzing runtime: {error}"));
        let mut builder = S3ServiceBuilder::new(Parsers);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        (runtime, builder.build())
    })
}

/// Parses `bytes` as one HTTP/1.1 request (head, then the rest as its body) and serves it.
pub fn serve_bytes(bytes: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(length)) = head.parse(bytes) else {
        return;
    };
    let (Some(method), Some(path)) = (head.method, head.path) else {
        return;
    };
    let mut request = http::Request::builder().method(method).uri(path);
    for header in head.headers.iter() {
        request = request.header(header.name, header.value);
    }
    let Ok(request) = request.body(s3s::Body::from(bytes::Bytes::copy_from_slice(&bytes[length..]))) else {
        return;
    };
    // As the server does before s3s sees a request.
    if crate::server::malformed_sigv4_dates(&request) {
        return;
    }
    let (runtime, service) = service();
    runtime.block_on(async {
        let Ok(response) = service.call(request).await else {
            return;
        };
        let mut body = response.into_body();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            if frame.is_err() {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn garbage_and_odd_requests_are_answered() {
        for input in [
            &b""[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"PUT /bucket/a//b HTTP/1.1\r\nhost: x\r\n\r\nbody",
            b"GET /bucket?list-type=2&continuation-token=%%% HTTP/1.1\r\nhost: x\r\n\r\n",
            b"POST /bucket/key?uploads HTTP/1.1\r\ncontent-length: 5\r\n\r\n<<<<<",
            b"\xff\xfe garbage",
            // The fuzzer's first find: a credential date with a byte below b'0'.
            b"PUT /b/k HTTP/1.1\r\nauthorization: AWS4-HMAC-SHA256 Credential=AK/2026!204/us-east-1/s3/aws4_request, \
              SignedHeaders=host, Signature=00\r\n\r\n",
            b"GET /b/k?X-Amz-Date=2026120!T000000Z&X-Amz-Credential=AK%2F20261204%2Fus HTTP/1.1\r\n\r\n",
            b"GET /b/k HTTP/1.1\r\nx-amz-date: 20261204T00 000Z\r\n\r\n",
        ] {
            super::serve_bytes(input);
        }
    }
}
