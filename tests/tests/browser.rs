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
        "the browser tests need Debian's chromium and chromium-driver (apt install chromium chromium-driver; scripts/test-deps does)"
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

/// Signs in through the form (a screenshot of it named `shot`), then waits for the store.
async fn sign_in(c: &Client, base: &str, user: &str, password: &str, shot: Option<&str>) {
    c.goto(&format!("{base}/files/")).await.expect("open");
    let field = c
        .wait()
        .for_element(Locator::Css("input[name=user]"))
        .await
        .expect("form");
    if let Some(name) = shot {
        shoot(c, name).await;
    }
    field.send_keys(user).await.expect("type");
    type_into(c, "input[name=password]", password).await;
    click(c, "form.login button").await;
    wait_for_text(c, "photos/").await;
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn type_into(c: &Client, css: &str, text: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

/// Signs out with the header's button and waits for the sign-in form.
async fn sign_out(c: &Client) {
    click(c, "header form button").await;
    c.wait()
        .for_element(Locator::Css("input[name=user]"))
        .await
        .expect("sign-in form");
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
    sign_in(&c, &base, "alice", "pw", Some("login")).await;
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
    sign_out(&c).await;
    c.goto(&format!("{base}/files/")).await.expect("open");
    c.wait()
        .for_element(Locator::Css("input[name=user]"))
        .await
        .expect("signed out");
    c.close().await.expect("close");
    m.unmount();
}

/// Makes a public link from the folder page's dialog; returns its URL.
async fn make_link(
    c: &Client,
    base: &str,
    dir: &str,
    name: &str,
    upload: bool,
    password: &str,
    last_day: &str,
) -> String {
    c.goto(&format!("{base}/files/{dir}/")).await.expect("open");
    click(c, &format!("input.pick[value='{name}']")).await;
    click(c, "#link").await;
    if upload {
        click(c, "input[name=access][value=upload]").await;
    }
    if !password.is_empty() {
        type_into(c, "#link-form input[name=password]", password).await;
    }
    if !last_day.is_empty() {
        c.execute(
            "document.querySelector('#link-form input[name=expires]').value = arguments[0];",
            vec![json!(last_day)],
        )
        .await
        .expect("last day");
    }
    click(c, "#link-create").await;
    for _ in 0..100 {
        let url = c
            .execute("return document.getElementById('link-url').value;", vec![])
            .await
            .expect("link url");
        if let Some(u) = url.as_str().filter(|u| u.contains("/s/")) {
            let u = u.to_string();
            shoot(c, "link-made").await;
            click(c, "#link-close").await;
            return u;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no link was made: {}", c.source().await.unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_links_open_in_a_fresh_profile_and_an_admin_adds_a_user_in_chromium() {
    let server = Server::start_web(&[("alice", "pw", "user"), ("root", "pw", "admin")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh("mkdir -p files/work/Proj files/work/Inbox && echo plan > files/work/Proj/plan.txt");
    m.sh("python3 -c \"import os; os.setxattr('.', 'user.shelf.sync', b'1')\"");
    let base = server
        .web
        .clone()
        .expect("web")
        .trim_end_matches('/')
        .to_string();
    let last_day = String::from_utf8(
        Command::new("date")
            .args(["-u", "-d", "+7 days", "+%F"])
            .output()
            .expect("date")
            .stdout,
    )
    .expect("utf-8")
    .trim()
    .to_string();
    let owner_driver = start_driver();
    let c = browser(&owner_driver).await;
    sign_in(&c, &base, "alice", "pw", None).await;
    let link = make_link(
        &c,
        &base,
        "files/work",
        "Proj",
        false,
        "open sesame",
        &last_day,
    )
    .await;
    shoot(&c, "link-made").await;
    let link = format!("{base}{}", &link[link.find("/s/").expect("a link")..]);

    // A fresh profile (its own chromedriver and user data): no account, no cookies.
    let visitor_driver = start_driver();
    let v = browser(&visitor_driver).await;
    v.goto(&link).await.expect("open the link");
    wait_for_text(&v, "needs a password").await;
    shoot(&v, "link-password").await;
    type_into(&v, "form.login input[name=password]", "wrong").await;
    click(&v, "form.login button").await;
    wait_for_text(&v, "not right").await;
    type_into(&v, "form.login input[name=password]", "open sesame").await;
    click(&v, "form.login button").await;
    wait_for_text(&v, "plan.txt</a>").await;
    shoot(&v, "link-folder").await;
    let plan = m.path.join("files/work/Proj/plan.txt");
    assert_eq!(
        fetched_sha256(&v, &format!("{link}/dl/plan.txt")).await,
        sha256_of(&plan)
    );

    // The owner sees it listed with its last day, and ends it.
    c.goto(&format!("{base}/shares")).await.expect("shares");
    wait_for_text(&c, &last_day).await;
    shoot(&c, "shares").await;
    click(&c, "button.unlink").await;
    for _ in 0..100 {
        if !c
            .source()
            .await
            .unwrap_or_default()
            .contains("button class=\"unlink\"")
            && !c
                .source()
                .await
                .unwrap_or_default()
                .contains("class=\"unlink\"")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.source().await.expect("page").contains("No public links"));
    v.refresh().await.expect("reload");
    wait_for_text(&v, "does not exist").await;
    shoot(&v, "link-gone").await;

    // A file request: the visitor sends a file with the picker and sees nothing else.
    let drop = make_link(&c, &base, "files/work", "Inbox", true, "", "").await;
    let drop = format!("{base}{}", &drop[drop.find("/s/").expect("a link")..]);
    v.goto(&drop).await.expect("open the file request");
    wait_for_text(&v, "Send files").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sent = dir.path().join("scan.pdf");
    std::fs::write(&sent, b"%PDF-1.4 a visitor's scan\n").expect("write");
    v.execute(
        "document.getElementById('pick-files').hidden = false;",
        vec![],
    )
    .await
    .expect("show picker");
    type_into(&v, "#pick-files", &sent.display().to_string()).await;
    wait_for_text(&v, "Sent 1 file(s)").await;
    shoot(&v, "link-drop").await;
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read(m.path.join("files/work/Inbox/scan.pdf")).ok() == std::fs::read(&sent).ok()
    }));
    v.close().await.expect("close");

    // Photos: the folder opens as a grid of thumbnails; a photo opens in the viewer, and
    // the arrow key goes to the next one.
    for (name, rgb) in [
        ("beach.png", [40, 120, 220]),
        ("forest.png", [30, 160, 60]),
        ("sunset.png", [240, 120, 30]),
    ] {
        let img = image::RgbImage::from_fn(1600, 1000, |x, y| {
            image::Rgb([rgb[0], rgb[1], ((x + y) % 256) as u8])
        });
        img.save(m.path.join("photos/personal").join(name))
            .expect("photo");
    }
    m.sh("python3 -c \"import os; os.setxattr('.', 'user.shelf.sync', b'1')\"");
    c.goto(&format!("{base}/files/photos/personal/"))
        .await
        .expect("grid");
    let mut loaded = serde_json::Value::Null;
    for _ in 0..100 {
        loaded = c
            .execute(
                "const imgs = [...document.querySelectorAll('ul.grid img')];
                 return imgs.length === 3 && imgs.every((i) => i.complete && i.naturalWidth > 0);",
                vec![],
            )
            .await
            .expect("images");
        if loaded == json!(true) {
            break;
        }
        c.refresh().await.expect("reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(loaded, json!(true), "the grid's thumbnails did not load");
    shoot(&c, "photos").await;
    click(&c, "ul.grid a[href$='beach.png']").await;
    wait_for_text(&c, "1 of 3").await;
    c.find(Locator::Css("body"))
        .await
        .expect("page")
        .send_keys("\u{E014}") // the right arrow key (W3C WebDriver)
        .await
        .expect("arrow");
    wait_for_text(&c, "2 of 3").await;
    assert!(c
        .current_url()
        .await
        .expect("url")
        .as_str()
        .ends_with("/view/photos/personal/forest.png"));
    shoot(&c, "viewer").await;

    // The account page (storage, quota, alerts, devices) and search by name.
    c.goto(&format!("{base}/account")).await.expect("account");
    wait_for_text(&c, "Devices and browsers").await;
    shoot(&c, "account").await;
    c.goto(&format!("{base}/files/")).await.expect("home");
    type_into(&c, "form.search input[name=q]", "plan").await;
    c.find(Locator::Css("form.search input[name=q]"))
        .await
        .expect("search box")
        .send_keys("\u{E007}") // Enter
        .await
        .expect("enter");
    wait_for_text(&c, "plan.txt").await;
    shoot(&c, "search").await;

    // The admin adds an account, which then signs in.
    sign_out(&c).await;
    sign_in(&c, &base, "root", "pw", None).await;
    c.goto(&format!("{base}/admin")).await.expect("admin");
    type_into(&c, "#admin-add input[name=name]", "carol").await;
    type_into(&c, "#admin-add input[name=password]", "carols password").await;
    click(&c, "#admin-add button").await;
    wait_for_text(&c, "<td>carol</td>").await;
    shoot(&c, "admin").await;
    sign_out(&c).await;
    sign_in(&c, &base, "carol", "carols password", None).await;
    c.close().await.expect("close");
    m.unmount();
}
