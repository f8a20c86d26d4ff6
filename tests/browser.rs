//! Self-test of the headless-chromium helper (`support::browser`): a page with
//! an input, a highlight and a same-origin iframe holding an SVG, served by
//! axum on 127.0.0.1, driven through the DevTools protocol.

mod support;

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use serde_json::json;
use support::browser::Browser;

const INDEX: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>browser self-test</title>
<style>
  body { font: 16px sans-serif; margin: 24px; }
  #hit { padding: 8px; border: 2px solid #999; width: 360px; }
  #hit.on { background: #ffd400; border-color: #c60; }
</style></head>
<body>
  <h1>leakscope browser self-test</h1>
  <input id="q" placeholder="filter frames" autocomplete="off">
  <button id="b">clicked 0</button>
  <p id="hit">alloc::vec::Vec::push</p>
  <iframe id="frame" src="/frame" width="440" height="220"></iframe>
  <script>
    const q = document.getElementById('q');
    const hit = document.getElementById('hit');
    q.addEventListener('input', () => {
      hit.classList.toggle('on', q.value !== '' && hit.textContent.includes(q.value));
    });
    let clicks = 0;
    document.getElementById('b').addEventListener('click', (e) => {
      e.target.textContent = 'clicked ' + ++clicks;
    });
    document.body.dataset.ready = 'yes';
  </script>
</body></html>"#;

const FRAME: &str = r##"<!doctype html>
<html><head><meta charset="utf-8"></head><body style="margin:0">
<svg id="flame" xmlns="http://www.w3.org/2000/svg" width="420" height="200">
  <rect width="420" height="200" fill="#fff8e7"/>
  <rect class="frame" x="10" y="160" width="400" height="28" fill="#e4572e"/>
  <text x="16" y="179">main</text>
  <rect class="frame" x="10" y="128" width="260" height="28" fill="#f3a712"/>
  <text x="16" y="147">alloc::vec::Vec::push</text>
</svg></body></html>"##;

const BROKEN: &str = r#"<!doctype html><title>broken</title><script>
  console.error('bad thing', 42);
  setTimeout(() => { throw new Error('late failure'); }, 0);
</script>"#;

/// Serves `app` on a loopback port from a runtime thread of its own.
fn serve(app: Router) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send addr");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("server started")
}

/// Processes whose command line mentions `dir`.
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        // A process may exit between listing and reading: skip it.
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect()
}

fn screenshot_path() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir");
    target.join("screenshots").join("browser-selftest.png")
}

#[test]
fn drives_a_page_with_an_iframe_and_cleans_up() {
    let app = Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/frame", get(|| async { Html(FRAME) }))
        .route("/broken", get(|| async { Html(BROKEN) }));
    let addr = serve(app);
    let browser = Browser::start();
    let profile = browser.user_data_dir();
    assert!(!processes_using(&profile).is_empty(), "chromium is running");

    {
        let page = browser.open(&format!("http://{addr}/"));
        let ready = "document.body.dataset.ready === 'yes' \
                     && document.getElementById('frame').contentDocument.readyState === 'complete'";
        page.wait_for(
            ready,
            "the page script and the iframe",
            Duration::from_secs(10),
        );
        assert_eq!(page.eval("document.title"), json!("browser self-test"));
        assert_eq!(page.eval("[innerWidth, innerHeight]"), json!([1280, 900]));

        // Type into the input the way a person's keystrokes would arrive.
        assert_eq!(
            page.eval("document.getElementById('hit').className"),
            json!("")
        );
        page.eval(
            "(() => { const q = document.getElementById('q'); q.focus(); q.value = 'Vec::push'; \
             q.dispatchEvent(new Event('input', { bubbles: true })); })()",
        );
        let on = page.wait_for(
            "document.getElementById('hit').classList.contains('on')",
            "the highlight",
            Duration::from_secs(5),
        );
        assert_eq!(on, json!(true));
        let bg = page.eval("getComputedStyle(document.getElementById('hit')).backgroundColor");
        assert_eq!(bg, json!("rgb(255, 212, 0)"));

        page.eval("document.getElementById('b').click(); document.getElementById('b').click()");
        assert_eq!(
            page.eval("document.getElementById('b').textContent"),
            json!("clicked 2")
        );

        // Promises are awaited; `undefined` comes back as null.
        let later = page.eval("new Promise(r => setTimeout(() => r({ n: 42 }), 20))");
        assert_eq!(later, json!({ "n": 42 }));
        assert_eq!(page.eval("undefined"), json!(null));

        let frames = page.eval_in_frame(
            "#frame",
            "document.querySelectorAll('svg rect.frame').length",
        );
        assert_eq!(frames, json!(2));
        let label = page.eval_in_frame(
            "#frame",
            "document.querySelector('#flame text').textContent",
        );
        assert_eq!(label, json!("main"));

        // Failures name what went wrong.
        let thrown = catch_unwind(AssertUnwindSafe(|| page.eval("throw new Error('boom')")));
        let msg = *thrown
            .expect_err("eval of a throw panics")
            .downcast::<String>()
            .expect("message");
        assert!(msg.contains("boom"), "{msg}");
        let missed = catch_unwind(AssertUnwindSafe(|| {
            page.wait_for(
                "window.never",
                "a flag nobody sets",
                Duration::from_millis(200),
            )
        }));
        let msg = *missed
            .expect_err("wait_for times out")
            .downcast::<String>()
            .expect("message");
        assert!(
            msg.contains("a flag nobody sets") && msg.contains("browser self-test"),
            "{msg}"
        );
        let nof = catch_unwind(AssertUnwindSafe(|| page.eval_in_frame("#nope", "1")));
        let msg = *nof
            .expect_err("missing frame panics")
            .downcast::<String>()
            .expect("message");
        assert!(msg.contains("no frame matches #nope"), "{msg}");

        let path = screenshot_path();
        let bytes = page.screenshot(&path);
        let png = std::fs::read(&path).expect("read screenshot");
        assert_eq!(png.len(), bytes);
        assert!(bytes > 1000, "screenshot of {bytes} bytes");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        assert_eq!(page.errors(), Vec::<String>::new());
    }

    // errors() does see console errors and uncaught exceptions.
    {
        let page = browser.open(&format!("http://{addr}/broken"));
        let errors = page.wait_for(
            "new Promise(r => setTimeout(() => r(true), 50))",
            "the late failure",
            Duration::from_secs(5),
        );
        assert_eq!(errors, json!(true));
        let errors = page.errors();
        assert!(
            errors.iter().any(|e| e == "console.error: bad thing 42"),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("late failure")),
            "{errors:?}"
        );
    }

    drop(browser);
    // Chromium's helpers go with it, and so does the profile.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_using(&profile).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_using(&profile), Vec::<String>::new());
    assert!(!profile.exists(), "{} was not removed", profile.display());
}
