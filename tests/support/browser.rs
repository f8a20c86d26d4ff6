//! A small blocking Chrome DevTools Protocol client for the end-to-end tests:
//! starts Debian's headless `chromium` on a fresh profile, opens pages served
//! on 127.0.0.1, evaluates JavaScript in them, waits for conditions, collects
//! console errors and writes PNG screenshots for people to look at.
//!
//! One websocket to the browser target carries every page through flattened
//! sessions (`Target.attachToTarget` with `flatten`). Calls are matched to
//! their responses by id; events that arrive meanwhile are buffered. Every
//! read is bounded: the socket has a read timeout and each call a deadline.

use std::cell::RefCell;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long starting the browser, loading a page or one call may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The viewport of every page, in CSS pixels (also the window size).
pub const VIEWPORT: (u32, u32) = (1280, 900);
/// How often `wait_for` polls its condition.
const POLL: Duration = Duration::from_millis(50);

/// A headless chromium, closed (or killed) and its profile removed on drop.
pub struct Browser {
    conn: RefCell<Conn>,
    // Dropped after `conn`, so after `Browser::drop` has asked it to close.
    process: Chromium,
}

/// The chromium process and its directory, reaped and removed on drop.
struct Chromium {
    child: Child,
    /// Holds the profile (`profile/`) and chromium's stderr (`stderr.log`).
    dir: PathBuf,
    /// How long to wait for chromium to exit by itself before killing it.
    grace: Duration,
}

/// The websocket to the browser target, with events not yet consumed.
struct Conn {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    events: Vec<Value>,
}

/// A tab of a [`Browser`], closed on drop.
pub struct Page<'a> {
    browser: &'a Browser,
    target: String,
    session: String,
}

impl Browser {
    /// Starts chromium (`$CHROMIUM` or `/usr/bin/chromium`) on a fresh profile
    /// and connects to its DevTools websocket; panics when it cannot.
    pub fn start() -> Browser {
        static N: AtomicUsize = AtomicUsize::new(0);
        let bin = std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into());
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("chromium-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let profile = dir.join("profile");
        fs::create_dir_all(&profile).expect("create the chromium profile dir");
        let log = File::create(dir.join("stderr.log")).expect("create chromium's stderr.log");
        let child = Command::new(&bin)
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            .args(["--disable-background-networking", "--no-first-run"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--remote-debugging-port=0")
            .arg(format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                let _ = fs::remove_dir_all(&dir);
                panic!(
                    "cannot start {bin:?} (install Debian's chromium package, or set CHROMIUM): {e}"
                )
            });
        // Owned before the wait so that a failure below still cleans up.
        let mut process = Chromium {
            child,
            dir,
            grace: Duration::ZERO,
        };
        let (port, path) = process.devtools_endpoint();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(TIMEOUT))
            .expect("set write timeout");
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = tungstenite::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("websocket handshake with {url}: {e}"));
        // Short reads from here on: each call loops up to its own deadline.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set read timeout");
        let conn = RefCell::new(Conn {
            ws,
            next_id: 0,
            events: Vec::new(),
        });
        Browser { conn, process }
    }

    /// The profile directory (`--user-data-dir`), removed on drop.
    pub fn user_data_dir(&self) -> PathBuf {
        self.process.dir.join("profile")
    }

    /// Opens `url` in a new tab and waits for its load event.
    pub fn open(&self, url: &str) -> Page<'_> {
        let blank = json!({ "url": "about:blank" });
        let target = self.call(None, "Target.createTarget", blank)["targetId"].clone();
        let attach = json!({ "targetId": target, "flatten": true });
        let session = self.call(None, "Target.attachToTarget", attach)["sessionId"].clone();
        let page = Page {
            browser: self,
            target: target.as_str().expect("targetId").to_owned(),
            session: session.as_str().expect("sessionId").to_owned(),
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({}));
        }
        page.call("Page.setLifecycleEventsEnabled", json!({ "enabled": true }));
        // Headless windows keep room for browser chrome: pin the viewport.
        let (width, height) = VIEWPORT;
        let metrics =
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false });
        page.call("Emulation.setDeviceMetricsOverride", metrics);
        let tree = page.call("Page.getFrameTree", json!({}));
        let blank = tree["frameTree"]["frame"].clone();
        let nav = page.call("Page.navigate", json!({ "url": url }));
        if let Some(err) = nav["errorText"].as_str() {
            let why = match err {
                "net::ERR_HTTP_RESPONSE_CODE_FAILURE" => " (an HTTP error status with no body)",
                _ => "",
            };
            panic!("cannot load {url}: {err}{why}");
        }
        // The main frame's load event for a document after about:blank: the
        // one navigated to, or the one its script went on to.
        let load = |m: &Value| {
            let p = &m["params"];
            m["method"] == "Page.lifecycleEvent"
                && p["name"] == "load"
                && p["frameId"] == blank["id"]
                && p["loaderId"] != blank["loaderId"]
        };
        let loaded = self
            .conn
            .borrow_mut()
            .wait_event(&page.session, load, TIMEOUT);
        if let Err(e) = loaded {
            panic!("{url} did not finish loading: {e}");
        }
        page
    }

    /// Sends `method` (to a page when `session` is given) and returns its
    /// result; panics on a protocol error or after [`TIMEOUT`].
    fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params, TIMEOUT)
            .unwrap_or_else(|e| panic!("DevTools {method}: {e}"))
    }

    fn try_call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        self.conn
            .borrow_mut()
            .call(session, method, params, timeout)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let close = self.try_call(None, "Browser.close", json!({}), Duration::from_secs(5));
        if close.is_ok() {
            self.process.grace = Duration::from_secs(5);
        }
    }
}

impl Chromium {
    /// Waits for the `DevToolsActivePort` file chromium writes into its
    /// profile: the port on line one, the browser target's path on line two.
    fn devtools_endpoint(&mut self) -> (u16, String) {
        let file = self.dir.join("profile/DevToolsActivePort");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let text = fs::read_to_string(&file).unwrap_or_default();
            if let [port, path] = text.lines().collect::<Vec<_>>()[..]
                && let Ok(port) = port.parse()
            {
                return (port, path.to_owned());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "chromium exited with {status} before DevTools was up (install Debian's chromium package){}",
                    self.stderr_tail()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "chromium did not open DevTools within {TIMEOUT:?}{}",
                    self.stderr_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The last lines chromium printed, for panic messages.
    fn stderr_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "; chromium's stderr ends:\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Helpers may still be writing into the profile for a moment.
        for _ in 0..20 {
            if fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
                break;
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Conn {
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .map_err(|e| format!("send: {e}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let msg = self.next(session, deadline)?;
            if msg["id"] == id {
                return match msg.get("error") {
                    Some(err) => Err(err.to_string()),
                    None => Ok(msg["result"].clone()),
                };
            }
            self.buffer(msg);
        }
    }

    /// Keeps a page's event for `wait_event` and `Page::errors`.
    fn buffer(&mut self, msg: Value) {
        if msg.get("method").is_some() && msg.get("sessionId").is_some() {
            self.events.push(msg);
        }
    }

    /// Takes the first buffered or arriving event of `session` that `wanted`.
    fn wait_event(
        &mut self,
        session: &str,
        wanted: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        let matches = |m: &Value| m["sessionId"] == session && wanted(m);
        loop {
            if let Some(i) = self.events.iter().position(matches) {
                return Ok(self.events.remove(i));
            }
            let msg = self.next(Some(session), deadline)?;
            self.buffer(msg);
        }
    }

    /// Reads the next message until `deadline`; fails early when the page of
    /// `session` goes away, since nothing for it will come any more.
    fn next(&mut self, session: Option<&str>, deadline: Instant) -> Result<Value, String> {
        loop {
            if Instant::now() > deadline {
                return Err("timed out waiting for chromium".into());
            }
            let text = match self.ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(format!("websocket: {e}")),
            };
            let msg: Value =
                serde_json::from_str(&text).map_err(|e| format!("bad JSON from chromium: {e}"))?;
            let gone = ["Target.detachedFromTarget", "Inspector.targetCrashed"];
            let ended = gone.iter().any(|m| msg["method"] == *m);
            if ended
                && session.is_some_and(|s| msg["sessionId"] == s || msg["params"]["sessionId"] == s)
            {
                return Err(format!("the page went away: {msg}"));
            }
            return Ok(msg);
        }
    }
}

impl Page<'_> {
    fn call(&self, method: &str, params: Value) -> Value {
        self.browser.call(Some(&self.session), method, params)
    }

    /// Evaluates `js` (awaiting a promise) and returns its JSON value, `null`
    /// for `undefined`; panics with the exception's text when it throws.
    pub fn eval(&self, js: &str) -> Value {
        self.try_eval(js, TIMEOUT)
            .unwrap_or_else(|e| panic!("eval of `{js}` failed: {e}"))
    }

    fn try_eval(&self, js: &str, timeout: Duration) -> Result<Value, String> {
        let params = json!({ "expression": js, "returnByValue": true, "awaitPromise": true });
        let r = self
            .browser
            .try_call(Some(&self.session), "Runtime.evaluate", params, timeout)?;
        if let Some(details) = r.get("exceptionDetails") {
            return Err(exception_text(details));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Evaluates `js` inside the same-origin iframe matching `frame_selector`.
    pub fn eval_in_frame(&self, frame_selector: &str, js: &str) -> Value {
        let (sel, code) = (json!(frame_selector), json!(js));
        self.eval(&format!(
            "(() => {{ const f = document.querySelector({sel}); \
             if (!f) throw new Error('no frame matches ' + {sel}); \
             return f.contentWindow.eval({code}); }})()"
        ))
    }

    /// Polls the expression `js` every 50 ms until it is truthy and returns
    /// its value; panics naming `what` after `timeout`. Exceptions count as
    /// not yet (an element may not exist yet) and the last one is reported.
    pub fn wait_for(&self, js: &str, what: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            let left = deadline.saturating_duration_since(Instant::now()) + POLL;
            match self.try_eval(js, left) {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => last = format!("last value {v}"),
                Err(e) => last = format!("last error {e}"),
            }
            if Instant::now() > deadline {
                let at = self.try_eval("[document.title, location.href]", Duration::from_secs(5));
                panic!(
                    "timed out after {timeout:?} waiting for {what} (`{js}`, {last}); page [title, url]: {at:?}"
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Writes a PNG screenshot of the viewport to `path`, creating its
    /// parent directories, and returns its size in bytes.
    pub fn screenshot(&self, path: &Path) -> usize {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        fs::write(path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        png.len()
    }

    /// Console errors and warnings, uncaught exceptions and browser log
    /// errors (such as failed loads, except `/favicon.ico`) the page has
    /// produced so far.
    pub fn errors(&self) -> Vec<String> {
        // A round trip pulls in the events chromium sent before it.
        self.eval("0");
        let conn = self.browser.conn.borrow();
        let mine = conn
            .events
            .iter()
            .filter(|m| m["sessionId"] == self.session.as_str());
        mine.filter_map(|m| {
            let p = &m["params"];
            match m["method"].as_str()? {
                "Runtime.consoleAPICalled" => {
                    let kind = p["type"].as_str()?;
                    if !matches!(kind, "error" | "warning" | "assert") {
                        return None;
                    }
                    let args = p["args"].as_array()?.iter().map(|a| match &a["value"] {
                        Value::String(s) => s.clone(),
                        Value::Null => a["description"].as_str().unwrap_or("undefined").to_owned(),
                        v => v.to_string(),
                    });
                    Some(format!(
                        "console.{kind}: {}",
                        args.collect::<Vec<_>>().join(" ")
                    ))
                }
                "Runtime.exceptionThrown" => Some(format!(
                    "uncaught: {}",
                    exception_text(&p["exceptionDetails"])
                )),
                "Log.entryAdded" if p["entry"]["level"] == "error" => {
                    let (text, url) = (p["entry"]["text"].as_str()?, p["entry"]["url"].as_str());
                    let url = url.unwrap_or("");
                    // Chromium asks every server for one; it is no page's error.
                    (!url.ends_with("/favicon.ico")).then(|| format!("log: {text} ({url})"))
                }
                _ => None,
            }
        })
        .collect()
    }
}

impl Drop for Page<'_> {
    fn drop(&mut self) {
        let params = json!({ "targetId": self.target });
        let _ = self
            .browser
            .try_call(None, "Target.closeTarget", params, Duration::from_secs(5));
        let mut conn = self.browser.conn.borrow_mut();
        conn.events
            .retain(|m| m["sessionId"] != self.session.as_str());
    }
}

/// The message (with stack) of a `Runtime.ExceptionDetails`.
fn exception_text(details: &Value) -> String {
    let text = details["exception"]["description"].as_str();
    text.or(details["text"].as_str())
        .unwrap_or("exception")
        .to_owned()
}

/// JavaScript truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Decodes standard base64 (as DevTools sends binary data); panics on junk.
fn base64_decode(text: &str) -> Vec<u8> {
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64 byte {c:#04x}"),
    };
    let digits = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= u32::from(sextet(c)) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
