//! The headless-browser helper of the end-to-end tests: a thin layer over the
//! `headless_chrome` crate that starts Debian's `chromium` on a fresh profile,
//! opens pages served on 127.0.0.1 (or `file://` reports), evaluates
//! JavaScript in them and their iframes, waits for conditions, collects
//! console errors and writes PNG screenshots for people to look at.
//!
//! The crate owns the DevTools connection, the process and its kill on drop;
//! this layer adds what the tests rely on: a pinned viewport, waiting for the
//! load of the document navigated to, panics that say what went wrong, and a
//! record of each page's console, exception and log events.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use headless_chrome::LaunchOptions;
use headless_chrome::browser::tab::{EventListener, Tab};
use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::{Emulation, Page as Cdp, Runtime};
use serde_json::{Value, json};

/// How long starting the browser, loading a page or one call may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The viewport of every page, in CSS pixels (also the window size).
pub const VIEWPORT: (u32, u32) = (1280, 900);
/// How often `wait_for` polls its condition.
const POLL: Duration = Duration::from_millis(50);

/// A headless chromium, closed (then killed) and its profile removed on drop.
pub struct Browser {
    /// Taken on drop, so that chromium is gone before the profile is removed.
    inner: Option<headless_chrome::Browser>,
    /// Holds the profile (`profile/`).
    dir: PathBuf,
}

/// A tab of a [`Browser`], closed on drop.
pub struct Page<'a> {
    _browser: &'a Browser,
    tab: Arc<Tab>,
    /// The page's events that matter here, as `{method, params}` JSON.
    events: Arc<Mutex<Vec<Value>>>,
    listener: Weak<dyn EventListener<Event> + Send + Sync>,
}

impl Browser {
    /// Starts chromium (`$CHROMIUM`, or `chromium` on PATH) on a fresh
    /// profile and connects to it; panics when it cannot.
    pub fn start() -> Browser {
        static N: AtomicUsize = AtomicUsize::new(0);
        let bin = std::env::var_os("CHROMIUM").unwrap_or_else(|| "chromium".into());
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("chromium-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let profile = dir.join("profile");
        fs::create_dir_all(&profile).expect("create the chromium profile dir");
        // Chromium refuses its sandbox to root; anyone else keeps it.
        let root = fs::metadata("/proc/self").map_or(true, |m| m.uid() == 0);
        let options = LaunchOptions {
            path: Some(bin.clone().into()),
            user_data_dir: Some(profile),
            sandbox: !root,
            window_size: Some(VIEWPORT),
            // Chromium picks a free port and prints it: no race for one.
            port: Some(0),
            // Both the longest wait for one answer and how long the
            // connection may be quiet between two uses.
            idle_browser_timeout: Duration::from_secs(120),
            ..LaunchOptions::default()
        };
        let mut browser = Browser { inner: None, dir };
        // The crate's threads start here and keep this thread's signal mask.
        let inner = without_profiler_signals(|| headless_chrome::Browser::new(options));
        let inner = inner.unwrap_or_else(|e| {
            panic!(
                "cannot start {bin:?} (install Debian's chromium package, or set CHROMIUM): {e:#}"
            )
        });
        inner.set_default_timeout(TIMEOUT);
        browser.inner = Some(inner);
        browser
    }

    /// The profile directory (`--user-data-dir`), removed on drop.
    pub fn user_data_dir(&self) -> PathBuf {
        self.dir.join("profile")
    }

    /// Opens `url` in a new tab and waits for its load event.
    pub fn open(&self, url: &str) -> Page<'_> {
        let inner = self.inner.as_ref().expect("browser running");
        let tab = inner
            .new_tab()
            .unwrap_or_else(|e| panic!("open a tab: {e:#}"));
        tab.set_default_timeout(TIMEOUT);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let record = move |event: &Event| {
            if let Some(v) = recorded(event) {
                sink.lock().expect("events lock").push(v);
            }
        };
        let listener = tab
            .add_event_listener(Arc::new(record))
            .unwrap_or_else(|e| panic!("listen to the tab: {e:#}"));
        let page = Page {
            _browser: self,
            tab,
            events,
            listener,
        };
        let tab = &page.tab;
        let enabled = tab.enable_runtime().and_then(|t| t.enable_log());
        enabled.unwrap_or_else(|e| panic!("DevTools Runtime/Log.enable: {e:#}"));
        // Headless windows keep room for browser chrome: pin the viewport.
        let (width, height) = VIEWPORT;
        page.call(Emulation::SetDeviceMetricsOverride {
            width,
            height,
            device_scale_factor: 1.0,
            mobile: false,
            scale: None,
            screen_width: None,
            screen_height: None,
            position_x: None,
            position_y: None,
            dont_set_visible_size: None,
            screen_orientation: None,
            viewport: None,
            display_feature: None,
            device_posture: None,
        });
        let blank = page.call(Cdp::GetFrameTree(None)).frame_tree.frame;
        let nav = page.call(Cdp::Navigate {
            url: url.to_owned(),
            referrer: None,
            transition_Type: None,
            frame_id: None,
            referrer_policy: None,
        });
        if let Some(err) = nav.error_text {
            let why = match err.as_str() {
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
                && p["frameId"] == blank.id.as_str()
                && p["loaderId"] != blank.loader_id.as_str()
        };
        if let Err(e) = page.wait_event(load, TIMEOUT) {
            panic!("{url} did not finish loading: {e}");
        }
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // headless_chrome asks chromium to close, then kills and reaps it.
        drop(self.inner.take());
        // Helpers may still be writing into the profile for a moment.
        for _ in 0..100 {
            if fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
                break;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Runs `f` with SIGPROF and SIGURG blocked in this thread, so that threads
/// it starts never take them. The agent under test signals threads (its CPU
/// sampler, its thread dumps), and headless_chrome takes the EINTR such a
/// signal gives its socket read for a lost connection.
fn without_profiler_signals<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: `sigset_t` is plain data that `sigemptyset` initialises before
    // any other use; `pthread_sigmask` only changes this thread's mask, and
    // `old` receives the previous one, restored below.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPROF);
        libc::sigaddset(&mut set, libc::SIGURG);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    };
    let out = f();
    // SAFETY: restores the mask saved above, a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    out
}

/// The `{method, params}` JSON of an event [`Page`] keeps, `None` for others.
fn recorded(event: &Event) -> Option<Value> {
    let (method, params) = match event {
        Event::PageLifecycleEvent(e) => ("Page.lifecycleEvent", serde_json::to_value(&e.params)),
        Event::RuntimeConsoleAPICalled(e) => {
            ("Runtime.consoleAPICalled", serde_json::to_value(&e.params))
        }
        Event::RuntimeExceptionThrown(e) => {
            ("Runtime.exceptionThrown", serde_json::to_value(&e.params))
        }
        Event::LogEntryAdded(e) => ("Log.entryAdded", serde_json::to_value(&e.params)),
        Event::InspectorTargetCrashed(_) => ("Inspector.targetCrashed", Ok(json!({}))),
        _ => return None,
    };
    Some(json!({ "method": method, "params": params.ok()? }))
}

impl Page<'_> {
    /// Calls a DevTools method on this page; panics on an error or timeout.
    fn call<C>(&self, method: C) -> C::ReturnObject
    where
        C: headless_chrome::protocol::cdp::types::Method + serde::Serialize + std::fmt::Debug,
    {
        let name = format!("{method:?}");
        self.tab
            .call_method(method)
            .unwrap_or_else(|e| panic!("DevTools {name}: {e:#}"))
    }

    /// Waits for the first recorded event that is `wanted`; fails early when
    /// the page crashed, since nothing will come any more.
    fn wait_event(
        &self,
        wanted: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let events = self.events.lock().expect("events lock");
                if let Some(m) = events.iter().find(|m| wanted(m)) {
                    return Ok(m.clone());
                }
                if events
                    .iter()
                    .any(|m| m["method"] == "Inspector.targetCrashed")
                {
                    return Err("the page crashed".into());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("timed out after {timeout:?} waiting for chromium"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Evaluates `js` (awaiting a promise) and returns its JSON value, `null`
    /// for `undefined`; panics with the exception's text when it throws.
    pub fn eval(&self, js: &str) -> Value {
        self.try_eval(js)
            .unwrap_or_else(|e| panic!("eval of `{js}` failed: {e}"))
    }

    fn try_eval(&self, js: &str) -> Result<Value, String> {
        let r = self
            .tab
            .call_method(Runtime::Evaluate {
                expression: js.to_owned(),
                return_by_value: Some(true),
                await_promise: Some(true),
                object_group: None,
                include_command_line_api: None,
                silent: None,
                context_id: None,
                generate_preview: None,
                user_gesture: None,
                throw_on_side_effect: None,
                timeout: None,
                disable_breaks: None,
                repl_mode: None,
                allow_unsafe_eval_blocked_by_csp: None,
                unique_context_id: None,
                serialization_options: None,
            })
            .map_err(|e| format!("DevTools: {e:#}"))?;
        if let Some(details) = r.exception_details {
            let text = details.exception.and_then(|e| e.description);
            return Err(text.unwrap_or(details.text));
        }
        Ok(r.result.value.unwrap_or(Value::Null))
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
            match self.try_eval(js) {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => last = format!("last value {v}"),
                Err(e) => last = format!("last error {e}"),
            }
            if Instant::now() > deadline {
                let at = self.try_eval("[document.title, location.href]");
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
        let png = self
            .tab
            .capture_screenshot(Cdp::CaptureScreenshotFormatOption::Png, None, None, true)
            .unwrap_or_else(|e| panic!("screenshot: {e:#}"));
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
        // Events reach the record on a thread of their own: a marker logged
        // now and seen there means everything before it was recorded too.
        static N: AtomicUsize = AtomicUsize::new(0);
        let mark = format!("leakscope-sync-{}", N.fetch_add(1, Ordering::Relaxed));
        self.eval(&format!("console.debug({})", json!(mark)));
        let seen = |m: &Value| {
            m["method"] == "Runtime.consoleAPICalled" && m["params"]["args"][0]["value"] == mark
        };
        if let Err(e) = self.wait_event(seen, TIMEOUT) {
            panic!("collecting the page's errors: {e}");
        }
        let events = self.events.lock().expect("events lock");
        events
            .iter()
            .filter_map(|m| {
                let p = &m["params"];
                match m["method"].as_str()? {
                    "Runtime.consoleAPICalled" => {
                        let kind = p["type"].as_str()?;
                        if !matches!(kind, "error" | "warning" | "assert") {
                            return None;
                        }
                        let args = p["args"].as_array()?.iter().map(|a| match &a["value"] {
                            Value::String(s) => s.clone(),
                            Value::Null => {
                                a["description"].as_str().unwrap_or("undefined").to_owned()
                            }
                            v => v.to_string(),
                        });
                        Some(format!(
                            "console.{kind}: {}",
                            args.collect::<Vec<_>>().join(" ")
                        ))
                    }
                    "Runtime.exceptionThrown" => {
                        let d = &p["exceptionDetails"];
                        let text = d["exception"]["description"].as_str();
                        let text = text.or(d["text"].as_str()).unwrap_or("exception");
                        Some(format!("uncaught: {text}"))
                    }
                    "Log.entryAdded" if p["entry"]["level"] == "error" => {
                        let (text, url) =
                            (p["entry"]["text"].as_str()?, p["entry"]["url"].as_str());
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
        let _ = self.tab.remove_event_listener(&self.listener);
        let _ = self.tab.close_target();
    }
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
