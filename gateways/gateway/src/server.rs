//! The HTTP/1.1 server around the S3 service: one tokio task per connection, at most
//! `requests_in_flight_max` requests being served at once (the rest wait for a permit:
//! backpressure reaches clients through TCP), an `x-amz-request-id` on every answer,
//! and browser POST-form uploads refused before any parsing (the form parser of this
//! s3s release is not fuzzed here; see decision 0011).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use s3s::service::S3Service;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits of the server.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Requests served at once; more wait.
    pub requests_in_flight_max: usize,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            requests_in_flight_max: 64,
        }
    }
}

/// Request ids: a per-process prefix and a counter.
struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    fn next(&self) -> String {
        format!("{:08X}{:016X}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

fn error_response(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>{request_id}</RequestId></Error>"
    );
    let mut response = Response::new(s3s::Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    response
}

fn is_form_upload(request: &http::Request<Incoming>) -> bool {
    request.method() == Method::POST
        && request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/form-data")
            })
}

/// A response body that holds its request's permit until it is sent whole (or the
/// connection drops it): a streaming GET counts against the bound while it streams.
pub struct PermitBody {
    body: s3s::Body,
    _permit: Option<OwnedSemaphorePermit>,
}

impl http_body::Body for PermitBody {
    type Data = bytes::Bytes;
    type Error = s3s::StdError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// What a request's `Expect: 100-continue` means for the connection after it.
///
/// A server answers such a request either with `100 Continue` (then reads the body) or
/// with a final status alone; hyper sends the `100` only when the body is read, so an
/// empty body (a 0-byte PUT) or a request refused before its body is read gets the final
/// status alone. botocore (the aws CLI, boto3) mishandles the request after that on the
/// same connection when it also expects `100-continue`: it keeps the earlier status line
/// and reads the next response's status line as a header, loses its `Content-Length`,
/// and waits for the body to end until its 60 s read timeout (`aws s3 sync` of a tree
/// with an empty file stalled a minute). Such answers therefore close the connection.
struct Expectation {
    continue_expected: bool,
    body_empty: bool,
}

impl Expectation {
    fn of<B>(request: &http::Request<B>) -> Expectation {
        let continue_expected = request
            .headers()
            .get(http::header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let body_empty = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|value| value.as_bytes() == b"0");
        Expectation {
            continue_expected,
            body_empty,
        }
    }

    /// Whether the answer went without `100 Continue` (an empty body is never read; an
    /// error may come before the body is), so the connection should close after it.
    fn client_may_misread_next(&self, status: StatusCode) -> bool {
        self.continue_expected && (self.body_empty || !status.is_success())
    }
}

/// How long requests in flight may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a request carries a SigV4 date that is not all digits where digits belong
/// (`x-amz-date`, the credential scope's date, in headers or presigned query
/// parameters). s3s 0.14.1 computes `c - b'0'` before checking that `c` is a digit, which
/// overflows (a panic in builds with overflow checks) on such input; these requests are
/// refused here instead, before s3s parses them. Found by the `request` fuzz target.
pub fn malformed_sigv4_dates<B>(request: &http::Request<B>) -> bool {
    // `YYYYMMDD` or `YYYYMMDDTHHMMSSZ`: the lengths and positions s3s checks before it
    // converts digits.
    fn bad_date(text: &str) -> bool {
        let bytes = text.as_bytes();
        match bytes.len() {
            8 => !bytes.iter().all(u8::is_ascii_digit),
            16 => bytes
                .iter()
                .enumerate()
                .any(|(index, byte)| index != 8 && index != 15 && !byte.is_ascii_digit()),
            _ => false,
        }
    }
    fn bad_credential(text: &str) -> bool {
        text.split('/').nth(1).is_some_and(bad_date)
    }
    // Every value of each header, as bytes (a value that is not text is s3s's to refuse).
    let values = |name: &str| {
        request
            .headers()
            .get_all(name)
            .into_iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
    };
    if values("x-amz-date").any(|value| bad_date(value.trim())) {
        return true;
    }
    for authorization in values("authorization") {
        // Every `Credential=` in the value; s3s reads the access key up to the first `/`
        // (spaces and commas included), then the date up to the next.
        for (index, _) in authorization.match_indices("Credential=") {
            if bad_credential(&authorization[index + "Credential=".len()..]) {
                return true;
            }
        }
    }
    for pair in request.uri().query().unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = urlencoding::decode(value)
            .map(|value| value.into_owned())
            .unwrap_or_default();
        match name {
            "X-Amz-Date" if bad_date(&value) => return true,
            "X-Amz-Credential" if bad_credential(&value) => return true,
            _ => {}
        }
    }
    false
}

/// Serves `service` on `listener` until `shutdown` resolves, then stops accepting and
/// waits up to [`SHUTDOWN_GRACE`] for requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    service: S3Service,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.requests_in_flight_max.max(1)));
    let ids = Arc::new(RequestIds {
        prefix: rand::random(),
        next: AtomicU64::new(1),
    });
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => {
                let all = u32::try_from(limits.requests_in_flight_max.max(1)).unwrap_or(u32::MAX);
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(all)).await;
                return Ok(());
            }
        };
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        let permits = permits.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            let handler = service_fn(move |request| {
                let service = service.clone();
                let permits = permits.clone();
                let ids = ids.clone();
                async move { Ok::<_, Infallible>(handle(request, &service, permits, &ids, peer).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(socket), handler);
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended");
            }
        });
    }
}

async fn handle(
    request: http::Request<Incoming>,
    service: &S3Service,
    permits: Arc<Semaphore>,
    ids: &RequestIds,
    peer: SocketAddr,
) -> Response<PermitBody> {
    let request_id = ids.next();
    let mut permit = None;
    let expectation = Expectation::of(&request);
    let mut response = if malformed_sigv4_dates(&request) {
        error_response(
            StatusCode::BAD_REQUEST,
            "AuthorizationHeaderMalformed",
            "the request's SigV4 date is malformed",
            &request_id,
        )
    } else if is_form_upload(&request) {
        error_response(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "browser POST uploads are not supported; use PUT or a presigned URL",
            &request_id,
        )
    } else {
        let Ok(acquired) = permits.clone().acquire_owned().await else {
            let response = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "shutting down",
                &request_id,
            );
            return response.map(|body| PermitBody { body, _permit: None });
        };
        permit = Some(acquired);
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        match service.call(request.map(s3s::Body::from)).await {
            Ok(response) => {
                tracing::debug!(%peer, %method, %path, status = %response.status(), "request");
                response
            }
            Err(error) => {
                tracing::warn!(%peer, %method, %path, ?error, "request failed");
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "internal error",
                    &request_id,
                )
            }
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amz-request-id", value);
    }
    if expectation.client_may_misread_next(response.status()) {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response.map(|body| PermitBody { body, _permit: permit })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(expect: Option<&str>, length: &str) -> http::Request<()> {
        let mut builder = http::Request::put("/b/k").header(http::header::CONTENT_LENGTH, length);
        if let Some(expect) = expect {
            builder = builder.header(http::header::EXPECT, expect);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn answers_without_100_continue_close_the_connection() {
        let empty = Expectation::of(&request(Some("100-continue"), "0"));
        assert!(empty.client_may_misread_next(StatusCode::OK));
        let body = Expectation::of(&request(Some("100-Continue"), "2000"));
        assert!(!body.client_may_misread_next(StatusCode::OK));
        assert!(body.client_may_misread_next(StatusCode::FORBIDDEN));
        let plain = Expectation::of(&request(None, "0"));
        assert!(!plain.client_may_misread_next(StatusCode::OK));
        assert!(!plain.client_may_misread_next(StatusCode::FORBIDDEN));
    }
}
