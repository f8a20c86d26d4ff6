//! The client over real TLS on loopback: an https server with a
//! certificate made for the test (rcgen), served with tokio-rustls and
//! axum; the webhook sink and an `Endpoint` deliver to it when told to
//! trust that certificate, and refuse it, naming the URL and the TLS
//! failure, when not.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use leakscope_agent::alert::Alert;
use leakscope_agent::alert::backoff::Backoff;
use leakscope_agent::alert::webhook::{WebhookOptions, WebhookSink};
use leakscope_agent::client::url::HttpUrl;
use leakscope_agent::client::{ClientError, Endpoint, RetryPolicy, TlsRoots};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Bodies posted to `/hook`.
type Seen = Arc<Mutex<Vec<String>>>;

/// A certificate for `names`, its PEM and the server side of it.
struct Cert {
    pem: String,
    config: Arc<rustls::ServerConfig>,
}

fn cert_for(names: &[&str]) -> Cert {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names).expect("certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key)
        .expect("server config");
    Cert {
        pem: made.cert.pem(),
        config: Arc::new(config),
    }
}

/// Writes `pem` to a file of its own for this test process.
fn pem_file(name: &str, pem: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("leakscope-tls-{}-{name}.pem", std::process::id()));
    std::fs::write(&path, pem).expect("write pem");
    path
}

async fn hook(State(seen): State<Seen>, body: Bytes) -> &'static str {
    seen.lock()
        .expect("lock")
        .push(String::from_utf8_lossy(&body).into_owned());
    "ok"
}

/// Serves https with `cert` on 127.0.0.1: `POST /hook` records the body,
/// `GET /hello` answers "hello over tls".
async fn serve_https(cert: &Cert) -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/hello", get(|| async { "hello over tls" }))
        .with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(cert.config.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    (addr, seen)
}

fn alert() -> Alert {
    Alert {
        rule: "thread-growth".into(),
        metric: "threads".into(),
        from: "ok".into(),
        to: "warning".into(),
        value: 12.0,
        threshold: 5.0,
        at_unix: 1_700_000_000.5,
        message: "threads grow by 12.0/min over 5m (limit 5.0/min): suspected leak".into(),
        target: "tls-test".into(),
        finding: None,
    }
}

fn fast(url: String) -> WebhookOptions {
    WebhookOptions {
        timeout: Duration::from_secs(10),
        backoff: Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
        ..WebhookOptions::new(url)
    }
}

fn once() -> RetryPolicy {
    RetryPolicy::default()
        .timeouts(Duration::from_secs(10), Duration::from_secs(10))
        .retries(0, Backoff::default())
}

#[tokio::test]
async fn the_webhook_delivers_over_https_to_a_trusted_internal_ca() {
    let cert = cert_for(&["localhost", "127.0.0.1"]);
    let (addr, seen) = serve_https(&cert).await;
    let ca = pem_file("trusted", &cert.pem);
    let sink = WebhookSink::spawn(WebhookOptions {
        ca_file: Some(ca.clone()),
        ..fast(format!("https://127.0.0.1:{}/hook", addr.port()))
    })
    .expect("spawn");
    sink.send(alert());
    let start = Instant::now();
    while sink.stats().sent == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not delivered: {:?}",
            sink.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bodies = seen.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let json: serde_json::Value = serde_json::from_str(&bodies[0]).expect("json");
    assert_eq!(json["rule"], "thread-growth", "{json}");
    assert_eq!(json["target"], "tls-test", "{json}");

    // An Endpoint with the same roots, by host name this time.
    let roots = TlsRoots::with_pem_file(&ca).expect("roots");
    let url = HttpUrl::parse(&format!("https://localhost:{}/", addr.port())).expect("url");
    let endpoint = Endpoint::with_roots(url, once(), &roots);
    let r = endpoint.get("/hello", None).await.expect("get over tls");
    assert_eq!((r.status, r.text().as_str()), (200, "hello over tls"));
    let _ = std::fs::remove_file(ca);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_naming_the_url_and_the_tls_failure() {
    let cert = cert_for(&["127.0.0.1"]);
    let (addr, seen) = serve_https(&cert).await;
    let url = format!("https://127.0.0.1:{}/hello", addr.port());

    // The platform's CAs alone do not know a self-signed certificate.
    let endpoint = Endpoint::new(HttpUrl::parse(&url).expect("url"), once());
    let e = endpoint.get("/hello", None).await.expect_err("untrusted");
    assert!(matches!(&e, ClientError::Tls { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("GET {url}: TLS failed: ")),
        "{text}"
    );
    assert!(text.contains("invalid peer certificate"), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");

    // Another self-signed certificate trusted instead: still refused.
    let other = pem_file("other", &cert_for(&["127.0.0.1"]).pem);
    let roots = TlsRoots::with_pem_file(&other).expect("roots");
    let other_ca = Endpoint::with_roots(HttpUrl::parse(&url).expect("url"), once(), &roots);
    let e = other_ca.get("/hello", None).await.expect_err("other CA");
    assert!(matches!(&e, ClientError::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains("invalid peer certificate"), "{e}");
    let _ = std::fs::remove_file(other);

    // The right certificate, but for another name than the URL's host.
    let named = cert_for(&["localhost"]);
    let (named_addr, _) = serve_https(&named).await;
    let named_pem = pem_file("named", &named.pem);
    let roots = TlsRoots::with_pem_file(&named_pem).expect("roots");
    let by_ip = format!("https://127.0.0.1:{}/", named_addr.port());
    let by_ip = Endpoint::with_roots(HttpUrl::parse(&by_ip).expect("url"), once(), &roots);
    let e = by_ip.get("/hello", None).await.expect_err("wrong name");
    assert!(
        e.to_string().contains("not valid for name \"127.0.0.1\""),
        "{e}"
    );
    let _ = std::fs::remove_file(named_pem);

    // The webhook sink does not deliver, and does not retry what cannot
    // succeed.
    let sink =
        WebhookSink::spawn(fast(format!("https://127.0.0.1:{}/hook", addr.port()))).expect("spawn");
    sink.send(alert());
    let start = Instant::now();
    while sink.stats().failed_attempts < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            sink.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = sink.stats();
    assert_eq!(
        (stats.sent, stats.failed_attempts, stats.retries),
        (0, 1, 0),
        "{stats:?}"
    );
    assert!(seen.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn plain_http_to_a_tls_port_fails_without_hanging() {
    let cert = cert_for(&["127.0.0.1"]);
    let (addr, _) = serve_https(&cert).await;
    let url = HttpUrl::parse(&format!("http://127.0.0.1:{}/", addr.port())).expect("url");
    let policy = RetryPolicy::default()
        .timeouts(Duration::from_secs(5), Duration::from_secs(5))
        .retries(0, Backoff::default());
    let e = Endpoint::new(url, policy)
        .get("/hello", None)
        .await
        .expect_err("not http");
    assert!(!matches!(e, ClientError::Tls { .. }), "{e}");
}
