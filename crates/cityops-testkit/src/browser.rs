//! A real browser for web pages' tests: Debian's headless Chromium driven through ChromeDriver
//! over the W3C WebDriver protocol (plain HTTP and JSON), as a user would use the page:
//! open it, wait for what a person would wait for, type, click, read what is shown, take a
//! screenshot. ChromeDriver and its Chromium run in one process group, killed on drop.

use crate::process::ServiceProcess;
use crate::support::{free_port, require_binary};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The reference of an element in a WebDriver answer: the value of its one key that starts
/// with `element-` (the W3C web element identifier).
fn element_of(value: &Value) -> Option<Element> {
    value.as_object()?.iter().find_map(|(k, v)| {
        k.starts_with("element-")
            .then(|| v.as_str().map(|s| Element(s.to_owned())))
            .flatten()
    })
}

/// A headless Chromium session.
pub struct Browser {
    _driver: ServiceProcess,
    _profile: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts ChromeDriver and a headless Chromium whose page area is `width` × `height` CSS
    /// pixels. Panics with the install command when either is missing.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromedriver = require_binary("chromedriver");
        let chromium = require_binary("chromium");
        let profile = tempfile::tempdir().expect("a temporary profile directory");
        let port = free_port();
        let mut driver = ServiceProcess::new(
            "chromedriver",
            chromedriver,
            vec![format!("--port={port}"), "--allowed-ips=127.0.0.1".into()],
            profile.path(),
            profile.path().join("chromedriver.log"),
        );
        driver.spawn();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer within 30 s:\n{}",
                driver.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let user_data = profile.path().join("profile");
        // Flags as measured on these machines: without the background-networking ones Chromium
        // keeps trying to reach Google's hosts, which the closed network refuses.
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--hide-scrollbars".into(),
            format!("--user-data-dir={}", user_data.display()),
            format!("--window-size={width},{height}"),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args,
                "mobileEmulation": {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}}}
        }}});
        let session: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver refused a session: {e}\n{}",
                    driver.log_tail(40)
                )
            })
            .json()
            .await
            .expect("a session answer");
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {session}"))
            .to_owned();
        Browser {
            _driver: driver,
            _profile: profile,
            base: format!("{base}/session/{id}"),
            http,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await?.json().await?;
        if let Some(error) = answer["value"]["error"].as_str() {
            bail!("webdriver {path}: {error}: {}", answer["value"]["message"]);
        }
        Ok(answer["value"].clone())
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .map(|_| ())
    }

    /// The elements matching a CSS selector now.
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(found
            .as_array()
            .map(|a| a.iter().filter_map(element_of).collect())
            .unwrap_or_default())
    }

    /// Waits until an element matching `css` is shown (up to `timeout`); the error says what
    /// the page showed instead.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> anyhow::Result<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            for e in self.find_all(css).await? {
                if self.displayed(&e).await.unwrap_or(false) {
                    return Ok(e);
                }
            }
            if Instant::now() > deadline {
                let body = self.text_of_page().await.unwrap_or_default();
                bail!("{css:?} not shown after {timeout:?}; the page shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the visible text of `css`'s first match contains `text`.
    pub async fn wait_for_text(
        &self,
        css: &str,
        text: &str,
        timeout: Duration,
    ) -> anyhow::Result<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            for e in self.find_all(css).await? {
                if self.text(&e).await.unwrap_or_default().contains(text) {
                    return Ok(e);
                }
            }
            if Instant::now() > deadline {
                let body = self.text_of_page().await.unwrap_or_default();
                bail!("{css:?} with {text:?} not shown after {timeout:?}; the page shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn displayed(&self, e: &Element) -> anyhow::Result<bool> {
        Ok(self
            .call(
                reqwest::Method::GET,
                &format!("/element/{}/displayed", e.0),
                None,
            )
            .await?
            .as_bool()
            .unwrap_or(false))
    }

    /// Clicks an element.
    pub async fn click(&self, e: &Element) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/click", e.0),
            Some(json!({})),
        )
        .await
        .map(|_| ())
    }

    /// Types `text` into an element.
    pub async fn type_into(&self, e: &Element, text: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        )
        .await
        .map(|_| ())
    }

    /// An element's visible text.
    pub async fn text(&self, e: &Element) -> anyhow::Result<String> {
        Ok(self
            .call(
                reqwest::Method::GET,
                &format!("/element/{}/text", e.0),
                None,
            )
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// An element's attribute.
    pub async fn attribute(&self, e: &Element, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .call(
                reqwest::Method::GET,
                &format!("/element/{}/attribute/{name}", e.0),
                None,
            )
            .await?
            .as_str()
            .map(str::to_owned))
    }

    /// Runs JavaScript in the page and returns its result.
    pub async fn script(&self, js: &str) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }

    /// The page's visible text.
    pub async fn text_of_page(&self) -> anyhow::Result<String> {
        Ok(self
            .script("return document.body ? document.body.innerText : ''")
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// A PNG screenshot of the page area, written to `path`; returns its width and height.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<(u32, u32)> {
        use base64::Engine as _;
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().context("a base64 screenshot")?)
            .context("decode the screenshot")?;
        std::fs::write(path, &bytes).with_context(|| format!("write {}", path.display()))?;
        png_size(&bytes).context("the screenshot is not a PNG")
    }
}

/// The width and height in a PNG's header.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let height = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((width, height))
}

/// Where a test's screenshots go: `target/screenshots/` (kept after the run, for a person to
/// look at).
pub fn screenshot_dir() -> PathBuf {
    let dir = crate::support::repo_root().join("target/screenshots");
    let _ = std::fs::create_dir_all(&dir);
    dir
}
