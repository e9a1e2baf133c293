//! Just enough of the W3C WebDriver protocol, over `reqwest`, to drive headless Chromium through
//! chromedriver: sessions, navigation, elements, keys, scripts, screenshots and console logs.
//!
//! (fantoccini is a dev-dependency, but without its TLS features its `ClientBuilder::new` needs
//! a `hyper_util` connector, which this crate cannot name.)

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key WebDriver uses for element references in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// WebDriver's code for the Enter key, for `type_keys`.
pub const ENTER: &str = "\u{E007}";
/// Longest a single wait in a test may take.
pub const STEP: Duration = Duration::from_secs(15);

/// A chromedriver process in its own process group. Dropping it ends the group, so the
/// Chromium processes it started go too, even when a test panics halfway.
pub struct Chromedriver {
    child: Child,
    base: String,
    http: reqwest::Client,
    /// Holds each browser's `--user-data-dir`; removed on drop.
    profiles: PathBuf,
}

impl Chromedriver {
    /// Starts chromedriver on a free port and waits until it is ready. Fails (never skips) when
    /// Chromium or chromedriver is not installed.
    pub async fn start() -> Self {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(binary).exists(),
                "{binary} is missing: the browser tests need Debian's Chromium and its driver \
                 (apt-get install chromium chromium-driver)"
            );
        }
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let profiles = std::env::temp_dir().join(format!(
            "authchat-browser-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&profiles).expect("a temp dir for browser profiles");

        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = {
            use std::os::unix::process::CommandExt as _;
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts")
        };
        let driver = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
            profiles,
        };
        let deadline = Instant::now() + STEP;
        loop {
            let status = driver.http.get(format!("{}/status", driver.base)).send().await;
            if let Ok(res) = status {
                if res.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == true) {
                    return driver;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens a new headless Chromium with its own fresh profile (cookies, storage) at 1200x800.
    pub async fn browser(&self) -> Browser {
        static PROFILE: AtomicU32 = AtomicU32::new(0);
        let profile = self.profiles.join(format!("profile-{}", PROFILE.fetch_add(1, Ordering::Relaxed)));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-dev-shm-usage", "--no-first-run", "--disable-component-update", "--disable-sync",
                    "--window-size=1200,800", format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let res = self.http.post(format!("{}/session", self.base)).json(&capabilities).send().await;
        let body: Value = res.expect("chromedriver answers").json().await.expect("JSON from chromedriver");
        let id = body["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {body}"));
        Browser { http: self.http.clone(), session: format!("{}/session/{id}", self.base) }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver does not take its browsers down when it is killed.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Chromium writes to its profile while it shuts down, so removal may need a few tries.
        let deadline = Instant::now() + Duration::from_secs(3);
        while std::fs::remove_dir_all(&self.profiles).is_err() && self.profiles.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One browser session.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
}

/// A found element's WebDriver id.
pub struct Element(String);

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.map_err(|e| format!("chromedriver unreachable: {e}"))?;
        let ok = res.status().is_success();
        let body: Value = res.json().await.map_err(|e| format!("chromedriver sent no JSON: {e}"))?;
        if ok {
            Ok(body["value"].clone())
        } else {
            Err(format!("{}: {}", body["value"]["error"], body["value"]["message"]))
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await.unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Opens a new tab (same profile, so same cookies) and switches to it; returns the old tab.
    pub async fn open_tab(&self) -> String {
        let current = self.call(reqwest::Method::GET, "/window", None).await.expect("the current tab");
        let opened = self.post("/window/new", json!({ "type": "tab" })).await;
        self.switch_to_tab(opened["handle"].as_str().expect("a tab handle")).await;
        current.as_str().expect("a tab handle").to_owned()
    }

    pub async fn switch_to_tab(&self, handle: &str) {
        self.post("/window", json!({ "handle": handle })).await;
    }

    /// Sets the page's viewport exactly (the window size includes the headless frame, and
    /// Chromium will not make a window narrower than 500 px); `mobile` emulates a phone.
    pub async fn emulate_viewport(&self, width: u32, height: u32, mobile: bool) {
        let params = json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile });
        self.post("/goog/cdp/execute", json!({ "cmd": "Emulation.setDeviceMetricsOverride", "params": params })).await;
    }

    /// Takes the page off the network, or back on (DevTools network emulation): its requests
    /// fail as with no connection, and going back online fires the page's `online` event.
    pub async fn set_offline(&self, offline: bool) {
        self.post("/goog/cdp/execute", json!({ "cmd": "Network.enable", "params": {} })).await;
        let params = json!({ "offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 });
        self.post("/goog/cdp/execute", json!({ "cmd": "Network.emulateNetworkConditions", "params": params })).await;
    }

    /// Runs `body` as a function in the page (`arguments` are `args`) and returns its result;
    /// a returned promise is awaited.
    pub async fn js(&self, body: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": body, "args": args })).await
    }

    /// Polls `body` (a function body, as for [`Browser::js`]) until it returns something other
    /// than `null`/`false`, and returns that; fails after [`STEP`] saying what was awaited.
    pub async fn wait_for(&self, what: &str, body: &str) -> Value {
        self.wait_for_within(what, body, STEP).await
    }

    pub async fn wait_for_within(&self, what: &str, body: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.js(body, json!([])).await;
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return value;
            }
            if Instant::now() > deadline {
                let badge = self.js(DIAGNOSTICS, json!([])).await;
                panic!("timed out after {limit:?} waiting for {what}; page state: {badge}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The first element matching a CSS selector, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        self.wait_for(&format!("element {css}"), &format!("return document.querySelector({css:?}) !== null")).await;
        let found = self.post("/element", json!({ "using": "css selector", "value": css })).await;
        Element(found[ELEMENT_KEY].as_str().expect("an element reference").to_owned())
    }

    /// Clicks the element, as a user would (it must be visible and not covered).
    pub async fn click(&self, css: &str) {
        let Element(id) = self.find(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// Types into the element through real key events ([`ENTER`] presses Enter).
    pub async fn type_keys(&self, css: &str, text: &str) {
        let Element(id) = self.find(css).await;
        self.post(&format!("/element/{id}/value"), json!({ "text": text })).await;
    }

    /// The page as PNG.
    pub async fn screenshot(&self) -> Vec<u8> {
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await.expect("a screenshot");
        base64::engine::general_purpose::STANDARD.decode(data.as_str().expect("base64 PNG")).expect("valid base64")
    }

    /// Console errors since the last call: script errors and CSP violations. Failed requests
    /// (source `network`) are left out: an answer the page expects, such as a 401 to a wrong
    /// password, is logged by Chromium too.
    pub async fn console_errors(&self) -> Vec<String> {
        self.severe_logs(false).await
    }

    /// Failed requests the console shows since the last call (any log read consumes them).
    pub async fn network_errors(&self) -> Vec<String> {
        self.severe_logs(true).await
    }

    async fn severe_logs(&self, network: bool) -> Vec<String> {
        let logs = self.post("/se/log", json!({ "type": "browser" })).await;
        logs.as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE" && (entry["source"] == "network") == network)
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Ends the session (and its Chromium).
    pub async fn quit(self) {
        let _ = self.call(reqwest::Method::DELETE, "", None).await;
    }
}

/// What a failed wait prints about the page: where it is and what the connection badge says.
const DIAGNOSTICS: &str = r#"
    const badge = document.getElementById("conn-badge");
    const notices = [...document.querySelectorAll(".notice, .form-error:not([hidden]), #admin-result")];
    return {
        url: location.href,
        badge: badge ? { ...badge.dataset, text: badge.innerText } : null,
        notices: notices.map((n) => n.innerText),
    };
"#;
