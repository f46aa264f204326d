//! The web app in a real browser: Debian's chromium, headless, driven through
//! chromedriver (W3C WebDriver) with fantoccini. A real `shelf-server --web` and a real
//! mount of the same account. Screenshots of every screen, at desktop size and at a
//! phone's (390×844), go to `target/tmp/screens/` (look at them; they are not committed).

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use shelf_tests::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// chromedriver on a free loopback port, stopped (by PID) on drop.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_driver() -> Driver {
    assert!(
        std::path::Path::new("/usr/bin/chromedriver").exists(),
        "the browser tests need Debian's chromium and chromium-driver (apt install chromium chromium-driver; .ci/run does)"
    );
    let port = free_port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver {
        child,
        url,
        _profile: tempfile::tempdir().expect("tempdir"),
    };
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "chromedriver did not start"
    );
    driver
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("acceptInsecureCerts".into(), json!(true));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

fn screens() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screens");
    std::fs::create_dir_all(&dir).expect("screens folder");
    dir
}

/// Screenshots of the current page at desktop size and at a phone's.
async fn shoot(c: &Client, name: &str) {
    for (label, w, h) in [("desktop", 1280, 900), ("phone", 390, 844)] {
        c.set_window_size(w, h).await.expect("resize");
        let png = c.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(screens().join(format!("{name}-{label}.png")), png).expect("write");
    }
    c.set_window_size(1280, 900).await.expect("resize");
}

async fn wait_for_text(c: &Client, text: &str) {
    for _ in 0..200 {
        if c.source().await.map(|s| s.contains(text)).unwrap_or(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the page never showed {text:?}: {}",
        c.source().await.unwrap_or_default()
    );
}

/// SHA-256 of a URL's body as fetched by the page (hex).
async fn fetched_sha256(c: &Client, url: &str) -> String {
    let v = c
        .execute_async(
            "const [url, done] = arguments;
             fetch(url, {credentials: 'same-origin'})
               .then((r) => r.arrayBuffer())
               .then((b) => crypto.subtle.digest('SHA-256', b))
               .then((d) => done([...new Uint8Array(d)].map((x) => x.toString(16).padStart(2, '0')).join('')))
               .catch((e) => done('error: ' + e));",
            vec![json!(url)],
        )
        .await
        .expect("fetch in the page");
    v.as_str().unwrap_or_default().to_string()
}

fn sha256_of(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_upload_download_restore_and_sign_out_in_chromium() {
    let server = Server::start_web(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    let base = server
        .web
        .clone()
        .expect("web")
        .trim_end_matches('/')
        .to_string();
    let driver = start_driver();
    let c = browser(&driver).await;

    // Sign in.
    c.goto(&format!("{base}/files/")).await.expect("open");
    let user = c
        .wait()
        .for_element(Locator::Css("input[name=user]"))
        .await
        .expect("form");
    shoot(&c, "login").await;
    user.send_keys("alice").await.expect("type");
    c.find(Locator::Css("input[name=password]"))
        .await
        .expect("password")
        .send_keys("pw")
        .await
        .expect("type");
    c.find(Locator::Css("form.login button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    wait_for_text(&c, "photos/").await;
    shoot(&c, "home").await;

    // Upload 200 MiB with the file picker; the page shows progress and then the file.
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("movie.mp4");
    let out = Command::new("head")
        .args(["-c", "209715200", "/dev/urandom"])
        .output()
        .expect("head");
    std::fs::write(&big, out.stdout).expect("write");
    c.goto(&format!("{base}/files/videos/personal/"))
        .await
        .expect("open");
    c.execute(
        "document.getElementById('pick-files').hidden = false;",
        vec![],
    )
    .await
    .expect("show picker");
    let picker = c.find(Locator::Id("pick-files")).await.expect("picker");
    picker
        .send_keys(&big.display().to_string())
        .await
        .expect("choose file");
    wait_for_text(&c, "<progress").await;
    shoot(&c, "uploading").await;
    wait_for_text(&c, "movie.mp4</a>").await;
    shoot(&c, "folder").await;
    // On the mount, byte for byte; and downloaded back by the browser, byte for byte.
    let on_mount = m.path.join("videos/personal/movie.mp4");
    assert!(wait_until(Duration::from_secs(10), || on_mount.exists()));
    assert_eq!(sha256_of(&on_mount), sha256_of(&big));
    assert_eq!(
        fetched_sha256(&c, "/dl/videos/personal/movie.mp4").await,
        sha256_of(&big)
    );

    // A second version of a small file, then restore the first one from its history page.
    let note = dir.path().join("note.txt");
    for text in ["first\n", "second\n"] {
        std::fs::write(&note, text).expect("write");
        c.goto(&format!("{base}/files/videos/personal/"))
            .await
            .expect("open");
        c.execute(
            "document.getElementById('pick-files').hidden = false;",
            vec![],
        )
        .await
        .expect("show");
        c.find(Locator::Id("pick-files"))
            .await
            .expect("picker")
            .send_keys(&note.display().to_string())
            .await
            .expect("choose");
        wait_for_text(&c, "note.txt</a>").await;
        // The page already lists the note after the first round: wait for this upload
        // to be finished on the server, seen through the mount.
        assert!(
            wait_until(Duration::from_secs(10), || std::fs::read_to_string(
                m.path.join("videos/personal/note.txt")
            )
            .ok()
            .as_deref()
                == Some(text)),
            "the upload of {text:?} never reached the mount"
        );
    }
    c.goto(&format!("{base}/history/videos/personal/note.txt"))
        .await
        .expect("history");
    wait_for_text(&c, ">v1<").await;
    shoot(&c, "versions").await;
    c.find(Locator::Css("button.restore[data-number='1']"))
        .await
        .expect("restore v1")
        .click()
        .await
        .expect("click");
    wait_for_text(&c, "movie.mp4</a>").await;
    assert!(wait_until(
        Duration::from_secs(5),
        || std::fs::read_to_string(m.path.join("videos/personal/note.txt"))
            .ok()
            .as_deref()
            == Some("first\n")
    ));

    // Delete the note through the selection and the confirm dialog; restore it from the
    // folder's deleted files.
    c.find(Locator::Css("input.pick[value='note.txt']"))
        .await
        .expect("checkbox")
        .click()
        .await
        .expect("pick");
    c.find(Locator::Id("delete"))
        .await
        .expect("delete")
        .click()
        .await
        .expect("click");
    c.accept_alert().await.expect("confirm");
    assert!(wait_until(Duration::from_secs(5), || !m
        .path
        .join("videos/personal/note.txt")
        .exists()));
    c.goto(&format!("{base}/deleted/videos/personal/"))
        .await
        .expect("deleted");
    wait_for_text(&c, "note.txt").await;
    shoot(&c, "deleted").await;
    c.find(Locator::Css("input.pick-version[data-name='note.txt']"))
        .await
        .expect("checkbox")
        .click()
        .await
        .expect("pick");
    c.find(Locator::Id("restore-picked"))
        .await
        .expect("restore")
        .click()
        .await
        .expect("click");
    assert!(wait_until(
        Duration::from_secs(5),
        || std::fs::read_to_string(m.path.join("videos/personal/note.txt"))
            .ok()
            .as_deref()
            == Some("first\n")
    ));

    // New folder through the prompt.
    c.goto(&format!("{base}/files/videos/personal/"))
        .await
        .expect("open");
    c.find(Locator::Id("new-folder"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    c.send_alert_text("Holiday 2026").await.expect("name");
    c.accept_alert().await.expect("ok");
    wait_for_text(&c, "Holiday 2026/").await;
    assert!(wait_until(Duration::from_secs(5), || m
        .path
        .join("videos/personal/Holiday 2026")
        .is_dir()));

    // Sign out: back at the sign-in form, and the folder pages send there.
    c.find(Locator::Css("header form button"))
        .await
        .expect("sign out")
        .click()
        .await
        .expect("click");
    c.wait()
        .for_element(Locator::Css("input[name=user]"))
        .await
        .expect("sign-in form");
    c.goto(&format!("{base}/files/")).await.expect("open");
    c.wait()
        .for_element(Locator::Css("input[name=user]"))
        .await
        .expect("signed out");
    c.close().await.expect("close");
    m.unmount();
}
