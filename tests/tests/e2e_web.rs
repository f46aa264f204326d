//! End-to-end: the web app of a real `shelf-server --web`, driven with curl (a real HTTP
//! client; the browser tests come with the pages that need JavaScript). Files are put in
//! through a real mount of the same account, so what the browser sees is what devices see.

use shelf_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One browser: a cookie jar and the server's web URL.
struct Browser {
    base: String,
    jar: PathBuf,
    dir: tempfile::TempDir,
}

/// An answer: status, headers (lower-cased names), body.
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
        })
    }
}

impl Browser {
    fn new(server: &Server) -> Browser {
        let dir = tempfile::tempdir().expect("tempdir");
        Browser {
            base: server
                .web
                .clone()
                .expect("web app")
                .trim_end_matches('/')
                .to_string(),
            jar: dir.path().join("cookies"),
            dir,
        }
    }

    fn curl(&self, path: &str, args: &[&str]) -> Answer {
        let headers = self.dir.path().join("headers");
        let body = self.dir.path().join("body");
        let out = Command::new("curl")
            .args(["-sk", "--path-as-is", "-c"])
            .arg(&self.jar)
            .arg("-b")
            .arg(&self.jar)
            .arg("-D")
            .arg(&headers)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl");
        Answer {
            status: String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
            headers: std::fs::read_to_string(&headers).unwrap_or_default(),
            body: std::fs::read(&body).unwrap_or_default(),
        }
    }

    fn get(&self, path: &str) -> Answer {
        self.curl(path, &[])
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let mut args = Vec::new();
        for (k, v) in form {
            args.push("--data-urlencode".to_string());
            args.push(format!("{k}={v}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.curl(path, &args)
    }

    fn cookie(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(&self.jar)
            .ok()?
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() == 7 && f[5] == name).then(|| f[6].to_string())
            })
    }

    /// Signs in through the form, as a browser does (the form's cookie goes along).
    fn sign_in(&self, user: &str, password: &str) -> Answer {
        let page = self.get("/login");
        assert_eq!(page.status, 200);
        let csrf = self
            .cookie("shelf_login")
            .expect("the form sets its cookie");
        assert!(page.text().contains(&csrf), "the form carries the token");
        self.post(
            "/login",
            &[("user", user), ("password", password), ("csrf", &csrf)],
        )
    }

    /// The CSRF token a signed-in page carries.
    fn csrf(&self) -> String {
        let page = self.get("/files/").text();
        let at = page
            .find("name=\"csrf\" value=\"")
            .expect("a form with a token")
            + 19;
        page[at..at + 32].to_string()
    }
}

/// Waits until every change made in the mount is on the server (as `shelf` commands do:
/// `sync(1)` does not reach a FUSE filesystem, SEMANTICS.md), and its content too.
fn settle(m: &Mount) {
    m.sh("python3 -c \"import os; os.setxattr('.', 'user.shelf.sync', b'1')\"");
    m.sh("python3 -c \"import os; [os.fsync(os.open(os.path.join(d, f), os.O_RDONLY)) for d, _, fs in os.walk('.') if '.versions' not in d for f in fs]\"");
}

fn sha(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read")
}

#[test]
fn sign_in_browse_and_download_with_ranges() {
    let server = Server::start_web(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh("head -c 3000000 /dev/urandom > photos/personal/big.jpg \
          && echo hi > 'photos/personal/<img src=x onerror=alert(1)>.jpg' \
          && echo page > photos/personal/page.html \
          && mkdir photos/personal/Trip && echo ü > 'photos/personal/Trip/résumé.txt'");
    settle(&m);

    let b = Browser::new(&server);
    // Not signed in: every page sends to the sign-in form.
    let a = b.get("/files/photos/");
    assert_eq!(a.status, 303);
    assert_eq!(a.header("location").as_deref(), Some("/login"));

    // A wrong password is refused with a plain message, and no session cookie is set.
    let a = b.sign_in("alice", "nope");
    assert_eq!(a.status, 401);
    assert!(
        a.text().contains("Wrong user name or password"),
        "{}",
        a.text()
    );
    assert!(b.cookie("shelf_session").is_none());

    // Signing in sets a Secure, HttpOnly, SameSite=Strict cookie.
    let a = b.sign_in("alice", "pw");
    assert_eq!(a.status, 303, "{}", a.text());
    let set = a.header("set-cookie").expect("a session cookie");
    for flag in ["shelf_session=", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(set.contains(flag), "{set}");
    }
    // The browser is one of the account's devices (listed, revocable).
    assert!(
        dev.run(&["devices"]).contains("web-"),
        "{}",
        dev.run(&["devices"])
    );
    // Every page carries the security headers.
    let page = b.get("/files/photos/personal/?view=list");
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(
        page.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );

    // The listing: folders first, breadcrumbs, names escaped (the file name is text).
    let html = page.text();
    assert!(html.contains(">Trip/</a>"), "{html}");
    assert!(
        html.contains("&#60;img src=x onerror=alert(1)&#62;.jpg")
            || html.contains("&lt;img src=x onerror=alert(1)&gt;.jpg"),
        "{html}"
    );
    assert!(!html.contains("<img src=x"), "a file name became markup");
    // The same in the photo grid (names in text and in attributes).
    let grid = b.get("/files/photos/personal/").text();
    assert!(grid.contains("<ul class=\"grid\">"), "{grid}");
    assert!(
        !grid.contains("<img src=x"),
        "a file name became markup in the grid"
    );
    assert!(
        !grid.contains("alt=\"<"),
        "a file name broke out of an attribute"
    );
    assert!(html.contains("href=\"/files/photos/\""), "breadcrumbs");
    assert!(html.find("Trip/").unwrap() < html.find("big.jpg").unwrap());
    let sub = b.get("/files/photos/personal/Trip/").text();
    assert!(sub.contains("r%C3%A9sum%C3%A9.txt"), "{sub}");

    // A whole download is byte-identical, shown inline for a picture.
    let a = b.get("/dl/photos/personal/big.jpg");
    assert_eq!(a.status, 200);
    assert_eq!(a.body, sha(&m.path.join("photos/personal/big.jpg")));
    assert_eq!(a.header("content-type").as_deref(), Some("image/jpeg"));
    assert_eq!(a.header("accept-ranges").as_deref(), Some("bytes"));
    // A range: only those bytes, 206 with Content-Range (a resumed download, a video seek).
    let whole = a.body;
    let a = b.curl(
        "/dl/photos/personal/big.jpg",
        &["-H", "Range: bytes=1000000-1999999"],
    );
    assert_eq!(a.status, 206);
    assert_eq!(
        a.header("content-range").as_deref(),
        Some("bytes 1000000-1999999/3000000")
    );
    assert_eq!(a.body, whole[1_000_000..2_000_000]);
    let a = b.curl("/dl/photos/personal/big.jpg", &["-H", "Range: bytes=-100"]);
    assert_eq!(a.body, whole[whole.len() - 100..]);
    let a = b.curl(
        "/dl/photos/personal/big.jpg",
        &["-H", "Range: bytes=3000000-"],
    );
    assert_eq!(a.status, 416);
    assert_eq!(
        a.header("content-range").as_deref(),
        Some("bytes */3000000")
    );
    // curl's own resume: the rest of a half-written file.
    let part = b.dir.path().join("part");
    std::fs::write(&part, &whole[..1_234_567]).expect("write");
    let out = Command::new("curl")
        .args(["-sk", "-b"])
        .arg(&b.jar)
        .args(["-C", "-", "-o"])
        .arg(&part)
        .arg(format!("{}/dl/photos/personal/big.jpg", b.base))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&part).expect("read"), whole);

    // HTML from the store is never shown as a page of this site.
    let a = b.get("/dl/photos/personal/page.html");
    assert_eq!(a.status, 200);
    assert!(a
        .header("content-disposition")
        .unwrap_or_default()
        .starts_with("attachment"));
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert!(a
        .header("content-security-policy")
        .unwrap_or_default()
        .contains("sandbox"));
    // UTF-8 names survive (RFC 6266 filename*).
    let a = b.get("/dl/photos/personal/Trip/r%C3%A9sum%C3%A9.txt");
    assert_eq!(a.text(), "ü\n");
    assert!(a
        .header("content-disposition")
        .unwrap_or_default()
        .contains("filename*=UTF-8''r%C3%A9sum%C3%A9.txt"));

    // Names that climb are refused, not resolved; missing files are 404.
    assert_eq!(b.get("/files/photos/../../etc/").status, 400);
    assert_eq!(b.get("/dl/photos/%2e%2e/x").status, 400);
    assert_eq!(b.get("/dl/photos/personal/missing.jpg").status, 404);

    // Signing out needs the page's CSRF token; after it the cookie is worthless.
    let token = b.cookie("shelf_session").expect("signed in");
    let a = b.post("/logout", &[("csrf", "0123456789abcdef0123456789abcdef")]);
    assert_eq!(a.status, 403);
    let csrf = b.csrf();
    let a = b.post("/logout", &[("csrf", &csrf)]);
    assert_eq!(a.status, 303);
    let stale = Browser::new(&server);
    std::fs::write(
        &stale.jar,
        format!("127.0.0.1\tFALSE\t/\tTRUE\t0\tshelf_session\t{token}\n"),
    )
    .expect("jar");
    assert_eq!(
        stale.get("/files/").status,
        303,
        "a revoked session still works"
    );
    m.unmount();
}

#[test]
fn a_sign_in_without_its_form_and_tls_below_1_3_are_refused() {
    let server = Server::start_web(&[("alice", "pw", "user")]);
    let b = Browser::new(&server);
    // A form posted from elsewhere (no form cookie): refused, no session.
    let a = b.post(
        "/login",
        &[("user", "alice"), ("password", "pw"), ("csrf", "x")],
    );
    assert_eq!(a.status, 403);
    assert!(b.cookie("shelf_session").is_none());
    // TLS 1.2 at most: the handshake fails.
    let out = Command::new("curl")
        .args(["-sk", "--tls-max", "1.2", "-o", "/dev/null"])
        .arg(format!("{}/login", b.base))
        .output()
        .expect("curl");
    assert!(!out.status.success(), "a TLS 1.2 handshake succeeded");
    // Another account's session sees only its own store.
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh("echo secret > files/personal/s.txt");
    settle(&m);
    drop(m);
    let out = Command::new(server_bin())
        .args(["user", "add", "bob", "--data"])
        .arg(&server.data)
        .env("SHELF_PASSWORD", "pw2")
        .output()
        .expect("user add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bob = Browser::new(&server);
    assert_eq!(bob.sign_in("bob", "pw2").status, 303);
    assert_eq!(bob.get("/dl/files/personal/s.txt").status, 404);
    assert!(!bob.get("/files/files/personal/").text().contains("s.txt"));
}

impl Browser {
    /// A JSON call with the page's CSRF token.
    fn api(&self, method: &str, path: &str, csrf: &str, json: Option<&str>) -> Answer {
        let header = format!("X-CSRF-Token: {csrf}");
        let mut args = vec!["-X", method, "-H", &header];
        if let Some(j) = json {
            args.extend(["-H", "Content-Type: application/json", "--data", j]);
        }
        self.curl(path, &args)
    }

    /// `PUT`s the bytes of `file` at `offset` of upload `id`.
    fn put_piece(&self, id: &str, offset: u64, csrf: &str, file: &Path) -> Answer {
        let header = format!("X-CSRF-Token: {csrf}");
        let data = format!("@{}", file.display());
        self.curl(
            &format!("/api/upload/{id}?offset={offset}"),
            // No `Expect: 100-continue`: the answer is the request's own status.
            &[
                "-X",
                "PUT",
                "-H",
                &header,
                "-H",
                "Expect:",
                "--data-binary",
                &data,
            ],
        )
    }
}

fn json_field(text: &str, field: &str) -> String {
    let at = text
        .find(&format!("\"{field}\":"))
        .unwrap_or_else(|| panic!("{field} in {text}"))
        + field.len()
        + 3;
    text[at..]
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}

#[test]
fn uploads_resume_and_commit_through_the_chunk_path_and_edits_reach_the_mount() {
    let server = Server::start_web(&[("alice", "pw", "user"), ("vic", "pw", "viewer")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    let b = Browser::new(&server);
    assert_eq!(b.sign_in("alice", "pw").status, 303);
    let csrf = b.csrf();

    // 20 MiB in two pieces, with a "dropped connection" between them.
    let data: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let first = b.dir.path().join("first");
    let rest = b.dir.path().join("rest");
    std::fs::write(&first, &data[..9 << 20]).expect("write");
    std::fs::write(&rest, &data[9 << 20..]).expect("write");
    let size = data.len();
    let start = format!(r#"{{"dir":"files/work","path":"Docs/report.bin","size":{size}}}"#);
    // No CSRF header: refused.
    assert_eq!(b.api("POST", "/api/upload", "", Some(&start)).status, 403);
    let a = b.api("POST", "/api/upload", &csrf, Some(&start));
    assert_eq!(a.status, 200, "{}", a.text());
    let id = json_field(&a.text(), "id");
    assert_eq!(b.put_piece(&id, 0, &csrf, &first).status, 200);
    // The browser lost the answer and sends the first piece again: told where to go on.
    let a = b.put_piece(&id, 0, &csrf, &first);
    assert_eq!(a.status, 409);
    assert_eq!(json_field(&a.text(), "offset"), (9u64 << 20).to_string());
    let a = b.api("GET", &format!("/api/upload/{id}"), &csrf, None);
    assert_eq!(json_field(&a.text(), "offset"), (9u64 << 20).to_string());
    assert_eq!(b.put_piece(&id, 9 << 20, &csrf, &rest).status, 200);
    let a = b.api("POST", &format!("/api/upload/{id}/finish"), &csrf, None);
    assert_eq!(a.status, 200, "{}", a.text());
    // The mount sees it (the change feed), byte for byte; the folder was made.
    let path = m.path.join("files/work/Docs/report.bin");
    assert!(
        wait_until(std::time::Duration::from_secs(5), || std::fs::read(&path)
            .ok()
            .as_deref()
            == Some(&data[..])),
        "the upload did not reach the mount"
    );
    // Uploading it again changed makes a version, as a mount's save does.
    let mut changed = data.clone();
    changed[5_000_000] ^= 0xff;
    let whole = b.dir.path().join("whole");
    std::fs::write(&whole, &changed).expect("write");
    let a = b.api("POST", "/api/upload", &csrf, Some(&start));
    let id = json_field(&a.text(), "id");
    // More than a request may carry: refused, nothing taken. (The server answers 413 as
    // soon as the body passes the limit and closes; a client still sending may see the
    // connection reset instead of the answer, which is the same refusal.)
    let too_big = b.put_piece(&id, 0, &csrf, &whole).status;
    assert!(matches!(too_big, 413 | 0), "{too_big}");
    let a = b.api("GET", &format!("/api/upload/{id}"), &csrf, None);
    assert_eq!(json_field(&a.text(), "offset"), "0", "{}", a.text());
    std::fs::write(&first, &changed[..9 << 20]).expect("write");
    std::fs::write(&rest, &changed[9 << 20..]).expect("write");
    assert_eq!(b.put_piece(&id, 0, &csrf, &first).status, 200);
    assert_eq!(b.put_piece(&id, 9 << 20, &csrf, &rest).status, 200);
    assert_eq!(
        b.api("POST", &format!("/api/upload/{id}/finish"), &csrf, None)
            .status,
        200
    );
    assert!(wait_until(
        std::time::Duration::from_secs(5),
        || std::fs::read(&path).ok().as_deref() == Some(&changed[..])
    ));
    assert_eq!(
        m.sh("ls files/work/Docs/.versions"),
        "report.bin.v01\nreport.bin.v02\n"
    );
    assert_eq!(
        std::fs::read(m.path.join("files/work/Docs/.versions/report.bin.v01")).expect("v01"),
        data
    );

    // New folder, rename, move, delete (a folder with its content).
    let ok = |a: Answer| assert_eq!(a.status, 200, "{}", a.text());
    ok(b.api(
        "POST",
        "/api/mkdir",
        &csrf,
        Some(r#"{"dir":"files/work","name":"Old"}"#),
    ));
    ok(b.api(
        "POST",
        "/api/rename",
        &csrf,
        Some(r#"{"dir":"files/work","name":"Old","new_name":"Archive"}"#),
    ));
    ok(b.api(
        "POST",
        "/api/move",
        &csrf,
        Some(r#"{"dir":"files/work","names":["Docs"],"to":"files/work/Archive"}"#),
    ));
    assert!(wait_until(std::time::Duration::from_secs(5), || m
        .sh("ls files/work/Archive 2>/dev/null")
        == "Docs\n"));
    assert_eq!(
        std::fs::read(m.path.join("files/work/Archive/Docs/report.bin")).expect("moved"),
        changed
    );
    // Names that are not one plain name are refused.
    let a = b.api(
        "POST",
        "/api/mkdir",
        &csrf,
        Some(r#"{"dir":"files/work","name":"../x"}"#),
    );
    assert_eq!(a.status, 400);
    ok(b.api(
        "POST",
        "/api/delete",
        &csrf,
        Some(r#"{"dir":"files/work","names":["Archive"]}"#),
    ));
    assert!(wait_until(std::time::Duration::from_secs(5), || m
        .sh("ls files/work")
        .is_empty()));

    // A viewer may look but not change anything.
    let v = Browser::new(&server);
    assert_eq!(v.sign_in("vic", "pw").status, 303);
    let vcsrf = v.csrf();
    let a = v.api(
        "POST",
        "/api/upload",
        &vcsrf,
        Some(r#"{"dir":"files/work","path":"x","size":1}"#),
    );
    assert_eq!(a.status, 403, "{}", a.text());
    let a = v.api(
        "POST",
        "/api/mkdir",
        &vcsrf,
        Some(r#"{"dir":"files/work","name":"x"}"#),
    );
    assert_eq!(a.status, 403, "{}", a.text());
    // Another session cannot go on with alice's upload.
    let a = b.api("POST", "/api/upload", &csrf, Some(&start));
    let id = json_field(&a.text(), "id");
    assert_eq!(v.put_piece(&id, 0, &vcsrf, &first).status, 404);
    m.unmount();
}

#[test]
fn versions_and_deleted_files_are_listed_downloaded_and_restored() {
    let server = Server::start_web(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh("echo one > files/work/doc.txt");
    settle(&m);
    m.sh("echo two > files/work/doc.txt && echo a > files/work/gone-a.txt && echo b > files/work/gone-b.txt");
    settle(&m);
    m.sh("rm files/work/gone-a.txt files/work/gone-b.txt");
    settle(&m);
    eprintln!("VERSIONS AFTER RM: {:?}", m.sh("ls files/work/.versions"));
    let b = Browser::new(&server);
    assert_eq!(b.sign_in("alice", "pw").status, 303);
    let csrf = b.csrf();

    // The folder page links each file's versions and the folder's deleted files.
    let page = b.get("/files/files/work/").text();
    assert!(
        page.contains("href=\"/history/files/work/doc.txt\""),
        "{page}"
    );
    assert!(page.contains("href=\"/deleted/files/work/\""), "{page}");
    let h = b.get("/history/files/work/doc.txt");
    assert_eq!(h.status, 200);
    let html = h.text();
    let (v2, v1) = (
        html.find(">v2<").expect("v2"),
        html.find(">v1<").expect("v1"),
    );
    assert!(v2 < v1, "newest first");
    let a = b.get("/version/1/files/work/doc.txt");
    assert_eq!(a.text(), "one\n");
    assert!(a
        .header("content-disposition")
        .unwrap_or_default()
        .contains("doc.v01.txt"));

    // Restoring v1 makes it the newest version; its history stays.
    let a = b.api(
        "POST",
        "/api/restore",
        &csrf,
        Some(r#"{"dir":"files/work","items":[{"name":"doc.txt","number":1}]}"#),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(wait_until(std::time::Duration::from_secs(5), || m
        .sh("cat files/work/doc.txt")
        == "one\n"));
    assert_eq!(
        m.sh("ls files/work/.versions | grep doc"),
        "doc.txt.v01\ndoc.txt.v02\ndoc.txt.v03\n"
    );

    // Deleted files: listed, restored several at once.
    let d = b.get("/deleted/files/work/").text();
    assert!(d.contains("gone-a.txt") && d.contains("gone-b.txt"), "{d}");
    assert!(
        !d.contains(">doc.txt"),
        "a file that exists is not deleted: {d}"
    );
    let a = b.api("POST", "/api/restore", &csrf, Some(r#"{"dir":"files/work","items":[{"name":"gone-a.txt","number":1},{"name":"gone-b.txt","number":1}]}"#));
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(wait_until(std::time::Duration::from_secs(5), || m.sh(
        "cat files/work/gone-a.txt files/work/gone-b.txt 2>/dev/null"
    )
        == "a\nb\n"));
    assert!(!b.get("/deleted/files/work/").text().contains("gone-a.txt"));
    // Without the page's token nothing is restored.
    let a = b.api(
        "POST",
        "/api/restore",
        "nope",
        Some(r#"{"dir":"files/work","items":[{"name":"doc.txt","number":2}]}"#),
    );
    assert_eq!(a.status, 403);
    m.unmount();
}

/// Every route of the web app for each kind of caller: no session, a forged session
/// cookie, another user, a viewer, and the owner; changes without the CSRF token.
#[test]
fn every_route_answers_each_kind_of_caller_as_it_should() {
    let server = Server::start_web(&[
        ("alice", "pw", "user"),
        ("bob", "pw", "user"),
        ("vic", "pw", "viewer"),
    ]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh("echo one > files/work/a.txt");
    settle(&m);
    m.sh("echo two > files/work/a.txt && echo x > files/work/b.txt");
    settle(&m);
    m.sh("rm files/work/b.txt");
    std::fs::write(m.path.join("files/work/p.png"), png(40, 30, [9, 9, 9])).expect("photo");
    settle(&m);
    let reads = [
        "/files/files/work/",
        "/dl/files/work/a.txt",
        "/history/files/work/a.txt",
        "/deleted/files/work/",
        "/version/1/files/work/a.txt",
        "/view/files/work/p.png",
        "/thumb/files/work/p.png?v=1",
        "/zip/files/work/",
        "/shares",
        "/account",
        "/search?q=a",
    ];
    let changes: [(&str, &str); 8] = [
        ("/api/mkdir", r#"{"dir":"files/work","name":"n"}"#),
        (
            "/api/rename",
            r#"{"dir":"files/work","name":"a.txt","new_name":"c.txt"}"#,
        ),
        (
            "/api/move",
            r#"{"dir":"files/work","names":["a.txt"],"to":"files"}"#,
        ),
        ("/api/delete", r#"{"dir":"files/work","names":["a.txt"]}"#),
        (
            "/api/restore",
            r#"{"dir":"files/work","items":[{"name":"b.txt","number":1}]}"#,
        ),
        (
            "/api/link",
            r#"{"dir":"files/work","name":"a.txt","access":"download"}"#,
        ),
        ("/api/unlink", r#"{"id":1}"#),
        (
            "/api/upload",
            r#"{"dir":"files/work","path":"u.txt","size":1}"#,
        ),
    ];

    // No session, or a forged one: pages send to the sign-in form, the API answers 401.
    let anon = Browser::new(&server);
    let forged = Browser::new(&server);
    std::fs::write(
        &forged.jar,
        "127.0.0.1\tFALSE\t/\tTRUE\t0\tshelf_session\tforged-token\n",
    )
    .expect("jar");
    for b in [&anon, &forged] {
        for r in reads {
            let a = b.get(r);
            assert_eq!(
                (r, a.status, a.header("location")),
                (r, 303, Some("/login".into()))
            );
        }
        for (r, body) in changes {
            assert_eq!((r, b.api("POST", r, "x", Some(body)).status), (r, 401));
        }
    }

    // Session fixation: a cookie set before signing in is never the one after.
    let fixed = Browser::new(&server);
    std::fs::write(
        &fixed.jar,
        "127.0.0.1\tFALSE\t/\tTRUE\t0\tshelf_session\tchosen-by-attacker\n",
    )
    .expect("jar");
    assert_eq!(fixed.sign_in("alice", "pw").status, 303);
    let token = fixed.cookie("shelf_session").expect("a session");
    assert_ne!(token, "chosen-by-attacker");
    assert!(token.len() >= 32, "a long random token");

    // Another user: paths name things in his own store, where none of alice's files are.
    let bob = Browser::new(&server);
    assert_eq!(bob.sign_in("bob", "pw").status, 303);
    let bcsrf = bob.csrf();
    for r in reads {
        let a = bob.get(r);
        // Folders, and pages about the account itself, are his own: none of alice's.
        let his_own = r.ends_with('/')
            || ["/shares", "/account", "/search"]
                .iter()
                .any(|p| r.starts_with(p));
        match his_own {
            true => assert!(a.status == 200 && !a.text().contains("a.txt"), "{r}"),
            false => assert_eq!((r, a.status), (r, 404)),
        }
    }
    for (r, body) in &changes[1..7] {
        assert_eq!(
            (*r, bob.api("POST", r, &bcsrf, Some(body)).status),
            (*r, 404)
        );
    }
    // His new folder is his own.
    assert_eq!(
        bob.api("POST", "/api/mkdir", &bcsrf, Some(changes[0].1))
            .status,
        200
    );
    settle(&m);
    assert!(!m.path.join("files/work/n").exists());

    // A viewer reads its own store but changes nothing.
    let vic = Browser::new(&server);
    assert_eq!(vic.sign_in("vic", "pw").status, 303);
    let vcsrf = vic.csrf();
    assert_eq!(vic.get("/files/files/work/").status, 200);
    for (r, body) in changes {
        let a = vic.api("POST", r, &vcsrf, Some(body));
        assert!(
            matches!(a.status, 403 | 404),
            "{r}: {} {}",
            a.status,
            a.text()
        );
        assert_ne!(a.status, 200, "{r}");
    }

    // The owner: every read works; a change without the token is refused and changes
    // nothing; with it, it works.
    let alice = Browser::new(&server);
    assert_eq!(alice.sign_in("alice", "pw").status, 303);
    for r in reads {
        assert_eq!((r, alice.get(r).status), (r, 200));
    }
    for (r, body) in changes {
        assert_eq!((r, alice.api("POST", r, "", Some(body)).status), (r, 403));
        assert_eq!(
            (
                r,
                alice
                    .api("POST", r, "0123456789abcdef0123456789abcdef", Some(body))
                    .status
            ),
            (r, 403)
        );
    }
    assert_eq!(
        m.sh("cat files/work/a.txt"),
        "two\n",
        "a refused change changed something"
    );
    let csrf = alice.csrf();
    let a = alice.api("POST", "/api/restore", &csrf, Some(changes[4].1));
    assert_eq!(a.status, 200, "{}", a.text());
    let a = alice.api("POST", "/api/mkdir", &csrf, Some(changes[0].1));
    assert_eq!(a.status, 200, "{}", a.text());
    m.unmount();
}

#[test]
fn a_folder_downloads_as_one_zip_with_its_tree() {
    let server = Server::start_web(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh("mkdir -p photos/work/Trip/Day1 && head -c 3000000 /dev/urandom > photos/work/Trip/Day1/a.jpg \
          && echo hello > 'photos/work/Trip/Grüße.txt' && mkdir photos/work/Trip/Empty");
    settle(&m);
    let b = Browser::new(&server);
    assert_eq!(b.sign_in("alice", "pw").status, 303);
    assert!(b
        .get("/files/photos/work/Trip/")
        .text()
        .contains("href=\"/zip/photos/work/Trip/\""));
    let a = b.get("/zip/photos/work/Trip/");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type").as_deref(), Some("application/zip"));
    assert!(a
        .header("content-disposition")
        .unwrap_or_default()
        .contains("Trip.zip"));
    let zip = b.dir.path().join("trip.zip");
    std::fs::write(&zip, &a.body).expect("write");
    let out = b.dir.path().join("out");
    let py = format!(
        "import zipfile; z = zipfile.ZipFile('{}'); assert z.testzip() is None; z.extractall('{}'); print('\\n'.join(sorted(z.namelist())))",
        zip.display(),
        out.display()
    );
    let listed = Command::new("python3")
        .args(["-c", &py])
        .output()
        .expect("python3");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "Day1/\nDay1/a.jpg\nEmpty/\nGrüße.txt\n"
    );
    assert_eq!(
        std::fs::read(out.join("Day1/a.jpg")).expect("a.jpg"),
        std::fs::read(m.path.join("photos/work/Trip/Day1/a.jpg")).expect("original")
    );
    assert_eq!(
        std::fs::read_to_string(out.join("Grüße.txt")).expect("txt"),
        "hello\n"
    );
    m.unmount();
}

#[test]
fn search_by_name_and_the_account_page_signs_other_browsers_out() {
    let server = Server::start_web(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh("mkdir -p files/projects/Site/assets && echo x > files/projects/Site/assets/Logo-Final.PNG \
          && echo y > photos/personal/holiday-logo.jpg && echo z > files/work/other.txt");
    settle(&m);
    let b = Browser::new(&server);
    assert_eq!(b.sign_in("alice", "pw").status, 303);
    let page = b.get("/search?q=logo");
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(
        html.contains("href=\"/dl/files/projects/Site/assets/Logo-Final.PNG\""),
        "{html}"
    );
    assert!(
        html.contains("href=\"/dl/photos/personal/holiday-logo.jpg\""),
        "{html}"
    );
    assert!(!html.contains("other.txt"), "{html}");
    assert!(
        b.get("/search?q=%3Cscript%3E")
            .text()
            .contains("&#60;script&#62;")
            || b.get("/search?q=%3Cscript%3E")
                .text()
                .contains("&lt;script&gt;")
    );

    // A second browser signs in; the first one sees it on the account page and signs it out.
    let other = Browser::new(&server);
    assert_eq!(other.sign_in("alice", "pw").status, 303);
    assert_eq!(other.get("/files/").status, 200);
    let account = b.get("/account").text();
    assert!(
        account.contains("laptop") && account.contains("(this browser)"),
        "{account}"
    );
    let webs: Vec<&str> = account
        .split("data-device=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter(|d| d.starts_with("web-"))
        .collect();
    assert_eq!(
        webs.len(),
        1,
        "only the other browser has a sign-out button: {account}"
    );
    let csrf = b.csrf();
    let a = b.api(
        "POST",
        "/api/revoke",
        &csrf,
        Some(&format!(r#"{{"device":"{}"}}"#, webs[0])),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        other.get("/files/").status,
        303,
        "the revoked browser still gets pages"
    );
    assert_eq!(
        b.get("/files/").status,
        200,
        "the first browser was signed out too"
    );
    m.unmount();
}

#[test]
fn sharing_with_another_user_from_the_browser() {
    let server = Server::start_web(&[("alice", "pw", "user"), ("bob", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh("mkdir files/work/Proj && echo plan > files/work/Proj/plan.txt");
    settle(&m);
    let a = Browser::new(&server);
    assert_eq!(a.sign_in("alice", "pw").status, 303);
    let acsrf = a.csrf();
    let r = a.api(
        "POST",
        "/api/share",
        &acsrf,
        Some(r#"{"dir":"files/work","name":"Proj","with":"bob","write":false}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Sharing with someone who does not exist says so.
    let r = a.api(
        "POST",
        "/api/share",
        &acsrf,
        Some(r#"{"dir":"files/work","name":"Proj","with":"nobody-here"}"#),
    );
    assert!(
        matches!(r.status, 400 | 404) && !r.text().is_empty(),
        "{} {}",
        r.status,
        r.text()
    );
    let shares = a.get("/shares").text();
    assert!(
        shares.contains("files/work/Proj")
            && shares.contains("bob")
            && shares.contains("read only"),
        "{shares}"
    );

    // Bob finds it under shared/alice/, reads it, cannot change it.
    let b = Browser::new(&server);
    assert_eq!(b.sign_in("bob", "pw").status, 303);
    assert!(b.get("/shares").text().contains("shared/alice/Proj"));
    assert!(b.get("/files/shared/alice/").text().contains("Proj/"));
    assert_eq!(b.get("/dl/shared/alice/Proj/plan.txt").text(), "plan\n");
    let bcsrf = b.csrf();
    let r = b.api(
        "POST",
        "/api/mkdir",
        &bcsrf,
        Some(r#"{"dir":"shared/alice/Proj","name":"x"}"#),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = b.api(
        "POST",
        "/api/upload",
        &bcsrf,
        Some(r#"{"dir":"shared/alice/Proj","path":"x","size":1}"#),
    );
    assert_eq!(r.status, 403, "{}", r.text());

    // Alice ends it; bob sees nothing of it any more.
    let node = shares
        .split("data-node=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the share's node")
        .to_string();
    let r = a.api(
        "POST",
        "/api/unshare",
        &acsrf,
        Some(&format!(r#"{{"node":{node},"with":"bob"}}"#)),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!b.get("/files/shared/").text().contains("alice/"));
    assert_eq!(b.get("/dl/shared/alice/Proj/plan.txt").status, 404);
    m.unmount();
}

#[test]
fn an_admin_manages_accounts_from_the_console_and_others_may_not() {
    let server = Server::start_web(&[("root", "pw", "admin"), ("alice", "pw", "user")]);
    let admin = Browser::new(&server);
    assert_eq!(admin.sign_in("root", "pw").status, 303);
    let csrf = admin.csrf();
    let page = admin.get("/admin");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("alice") && page.text().contains("Audit log"));
    assert!(admin.get("/account").text().contains("href=\"/admin\""));

    // Add an account; it signs in at once.
    let r = admin.api(
        "POST",
        "/api/admin",
        &csrf,
        Some(r#"{"op":"add","name":"carol","password":"s3cret","role":"viewer"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let carol = Browser::new(&server);
    assert_eq!(carol.sign_in("carol", "s3cret").status, 303);
    assert!(admin.get("/admin").text().contains("carol"));
    // Role, quota, password: the new password is the one that works.
    for body in [
        r#"{"op":"role","name":"carol","role":"user"}"#,
        r#"{"op":"quota","name":"carol","gib":0.5}"#,
        r#"{"op":"password","name":"carol","password":"n3w"}"#,
    ] {
        let r = admin.api("POST", "/api/admin", &csrf, Some(body));
        assert_eq!(r.status, 200, "{body}: {}", r.text());
    }
    assert!(admin.get("/admin").text().contains("512.0 MiB"));
    assert_eq!(Browser::new(&server).sign_in("carol", "s3cret").status, 401);
    assert_eq!(Browser::new(&server).sign_in("carol", "n3w").status, 303);
    // A bad role or quota is refused.
    let r = admin.api(
        "POST",
        "/api/admin",
        &csrf,
        Some(r#"{"op":"role","name":"carol","role":"god"}"#),
    );
    assert_eq!(r.status, 400);
    // The audit log on the page shows what happened.
    assert!(admin.get("/admin").text().contains("carol"));
    // Retention and the conflict policy, per account, on the running server.
    for body in [
        r#"{"op":"retention","name":"carol","keep_all":false,"all_days":7,"daily_days":14,"deleted_days":0}"#,
        r#"{"op":"conflicts","name":"carol","last_writer_wins":true}"#,
    ] {
        let r = admin.api("POST", "/api/admin", &csrf, Some(body));
        assert_eq!(r.status, 200, "{body}: {}", r.text());
    }
    let page = admin.get("/admin").text();
    assert!(
        page.contains("keep every version for 7 days, then one a day for 14 days, then one a week; deleted files forever"),
        "{page}"
    );
    assert!(
        page.contains("<option value=\"last-writer-wins\" selected>"),
        "{page}"
    );
    // Server health: the facts an admin checks first.
    for fact in [
        "Up for",
        "Connections open",
        "Devices online",
        "Disk free",
        "Pack files",
        "Current files / stored",
        "Last retention run",
        "Last scrub",
    ] {
        assert!(page.contains(fact), "{fact} missing");
    }
    // The audit log filtered by kind and by user.
    assert_eq!(Browser::new(&server).sign_in("alice", "wrong").status, 401);
    let failed = admin.get("/admin?kind=login-failed").text();
    let audit = &failed[failed.find("Audit log").expect("audit")..];
    assert!(
        audit.contains("login-failed") && !audit.contains("user-added"),
        "{audit}"
    );
    let carols = admin.get("/admin?user=carol").text();
    let audit = &carols[carols.find("Audit log").expect("audit")..];
    assert!(
        audit.contains("retention-changed") && !audit.contains(">alice<"),
        "{audit}"
    );

    // Not an admin: the console and its changes are refused.
    let alice = Browser::new(&server);
    assert_eq!(alice.sign_in("alice", "pw").status, 303);
    let acsrf = alice.csrf();
    assert_eq!(alice.get("/admin").status, 403);
    let r = alice.api(
        "POST",
        "/api/admin",
        &acsrf,
        Some(r#"{"op":"delete","name":"carol"}"#),
    );
    assert_eq!(r.status, 403);
    assert!(!alice.get("/account").text().contains("href=\"/admin\""));

    // Deleting the account ends it.
    let r = admin.api(
        "POST",
        "/api/admin",
        &csrf,
        Some(r#"{"op":"delete","name":"carol"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(Browser::new(&server).sign_in("carol", "n3w").status, 401);
}

#[test]
fn pages_get_the_change_feed_as_server_sent_events() {
    let server = Server::start_web(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    let b = Browser::new(&server);
    assert_eq!(b.sign_in("alice", "pw").status, 303);
    let out = b.dir.path().join("events");
    let mut curl = Command::new("curl")
        .args(["-skN", "--max-time", "20", "-b"])
        .arg(&b.jar)
        .arg("-o")
        .arg(&out)
        .arg(format!("{}/api/events", b.base))
        .spawn()
        .expect("curl");
    // The stream is open before the change is made.
    std::thread::sleep(std::time::Duration::from_millis(500));
    m.sh("echo hi > files/work/live.txt");
    settle(&m);
    // And an alert about the account: someone guesses its password.
    for _ in 0..5 {
        assert_eq!(Browser::new(&server).sign_in("alice", "guess").status, 401);
    }
    let arrived = wait_until(std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(&out).is_ok_and(|t| {
            t.contains("data: {")
                && t.contains("files/work/live.txt")
                && t.contains("{\"Alert\":\"Security\"}")
        })
    });
    let _ = curl.kill();
    let _ = curl.wait();
    assert!(
        arrived,
        "{}",
        std::fs::read_to_string(&out).unwrap_or_default()
    );
    // Without a session there is no stream.
    assert_eq!(Browser::new(&server).get("/api/events").status, 303);
    m.unmount();
}

/// `shelf-server run --metrics ADDR`: Prometheus text with requests by kind and result,
/// their latency, sign-ins by outcome, connections, chunk bytes and sizes.
#[test]
fn metrics_count_requests_logins_and_bytes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let init = Command::new(server_bin())
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .expect("init");
    assert!(init.status.success());
    let fp = String::from_utf8_lossy(&init.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint ").map(str::to_string))
        .expect("fingerprint");
    let add = Command::new(server_bin())
        .args(["user", "add", "alice", "--data"])
        .arg(&data)
        .env("SHELF_PASSWORD", "pw")
        .output()
        .expect("user add");
    assert!(add.status.success());
    let mut child = Command::new(server_bin())
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&data)
        // Retention runs every second here, so its duration is measured.
        .env("SHELF_PRUNE_INTERVAL_SECS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut addr = String::new();
    let mut metrics = String::new();
    for l in lines.by_ref().take(3).map_while(Result::ok) {
        if let Some(a) = l.strip_prefix("shelf-server listening on ") {
            addr = a.to_string();
        }
        if let Some(m) = l.strip_prefix("metrics on ") {
            metrics = m.to_string();
        }
    }
    std::thread::spawn(move || for _ in lines {});
    assert!(!addr.is_empty() && !metrics.is_empty(), "{addr} {metrics}");
    let dev = Device::new();
    let bad = dev
        .shelf()
        .args([
            "login",
            &addr,
            "--user",
            "alice",
            "--device",
            "d",
            "--fingerprint",
            &fp,
        ])
        .env("SHELF_PASSWORD", "wrong")
        .output()
        .expect("login");
    assert!(!bad.status.success());
    let good = dev
        .shelf()
        .args([
            "login",
            &addr,
            "--user",
            "alice",
            "--device",
            "d",
            "--fingerprint",
            &fp,
        ])
        .env("SHELF_PASSWORD", "pw")
        .output()
        .expect("login");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let m = dev.mount();
    m.sh("head -c 2000000 /dev/urandom > files/work/x.bin");
    m.sh("python3 -c \"import os; fd = os.open('files/work/x.bin', os.O_RDONLY); os.fsync(fd)\"");
    // The same bytes again: deduplicated, not stored twice.
    m.sh("cp files/work/x.bin files/personal/y.bin");
    m.sh(
        "python3 -c \"import os; fd = os.open('files/personal/y.bin', os.O_RDONLY); os.fsync(fd)\"",
    );
    // A change on another device reaches this mount's feed (the lag is measured).
    let other = Device::new();
    assert!(other
        .shelf()
        .args([
            "login",
            &addr,
            "--user",
            "alice",
            "--device",
            "e",
            "--fingerprint",
            &fp
        ])
        .env("SHELF_PASSWORD", "pw")
        .output()
        .expect("login")
        .status
        .success());
    let m2 = other.mount();
    m2.sh("echo hi > files/work/from-e.txt");
    m2.sh("python3 -c \"import os; fd = os.open('files/work/from-e.txt', os.O_RDONLY); os.fsync(fd)\"");
    assert!(wait_until(std::time::Duration::from_secs(5), || m
        .path
        .join("files/work/from-e.txt")
        .exists()));
    m2.unmount();
    let scrape = Command::new("curl")
        .args(["-s", &metrics])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&scrape.stdout);
    m.unmount();
    let _ = child.kill();
    let _ = child.wait();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert_eq!(value("shelf_logins_total{outcome=\"failed\"}"), 1.0);
    assert_eq!(value("shelf_logins_total{outcome=\"ok\"}"), 2.0);
    assert!(value("shelf_requests_total{kind=\"commit\",result=\"ok\"}") >= 1.0);
    assert!(value("shelf_request_seconds_count{kind=\"commit\"}") >= 1.0);
    assert!(value("shelf_chunk_bytes_received_total") >= 2_000_000.0);
    assert!(value("shelf_connections{door=\"protocol\"}") >= 1.0);
    assert!(value("shelf_database_bytes") > 0.0);
    assert!(value("shelf_stored_bytes") >= 2_000_000.0);
    assert!(value("shelf_chunks_stored_total") >= 1.0);
    assert!(value("shelf_chunks_deduplicated_total") >= 1.0);
    assert!(value("shelf_pack_files") >= 1.0);
    assert!(value("shelf_pack_bytes") >= 2_000_000.0);
    assert!(value("shelf_devices_online") >= 1.0);
    assert!(value("shelf_feed_lag_seconds_count") >= 1.0);
    assert!(text.contains("# TYPE shelf_garbage_bytes gauge"));
    assert!(value("shelf_job_seconds_count{job=\"prune\"}") >= 1.0);
}

/// The link part (`/s/TOKEN`) of a link's URL in a JSON answer.
fn link_path(answer: &Answer) -> String {
    let text = answer.text();
    let at = text
        .find("/s/")
        .unwrap_or_else(|| panic!("a link in {text}"));
    text[at..]
        .chars()
        .take_while(|c| *c != '"')
        .collect::<String>()
}

#[test]
fn public_links_open_without_an_account_until_revoked_and_guessing_is_blocked() {
    let server = Server::start_web(&[("alice", "pw", "user"), ("root", "pw", "admin")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh(
        "mkdir -p files/work/Proj/sub files/work/Inbox && echo plan > files/work/Proj/plan.txt \
          && echo deep > files/work/Proj/sub/deep.txt && echo mine > files/work/secret.txt \
          && echo kept > files/work/Inbox/report.txt \
          && head -c 3000000 /dev/urandom > files/work/Proj/big.bin",
    );
    settle(&m);
    let a = Browser::new(&server);
    assert_eq!(a.sign_in("alice", "pw").status, 303);
    let csrf = a.csrf();

    // A download link to a folder, with a password and a last day.
    let tomorrow = String::from_utf8(
        Command::new("date")
            .args(["-u", "-d", "+2 days", "+%F"])
            .output()
            .expect("date")
            .stdout,
    )
    .expect("utf-8")
    .trim()
    .to_string();
    let made = a.api(
        "POST",
        "/api/link",
        &csrf,
        Some(&format!(
            r#"{{"dir":"files/work","name":"Proj","access":"download","password":"open sesame","expires":"{tomorrow}"}}"#
        )),
    );
    assert_eq!(made.status, 200, "{}", made.text());
    let link = link_path(&made);
    let token = link.trim_start_matches("/s/").to_string();
    assert_eq!(token.len(), 48, "192-bit tokens: {link}");
    // A last day already past, and an upload link to a file, are refused.
    let r = a.api(
        "POST",
        "/api/link",
        &csrf,
        Some(r#"{"dir":"files/work","name":"Proj","access":"download","expires":"2001-01-01"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = a.api(
        "POST",
        "/api/link",
        &csrf,
        Some(r#"{"dir":"files/work","name":"secret.txt","access":"upload"}"#),
    );
    assert_ne!(r.status, 200, "{}", r.text());
    // Without the page's CSRF token nothing is made.
    assert_eq!(
        a.api(
            "POST",
            "/api/link",
            "",
            Some(r#"{"dir":"files/work","name":"Proj","access":"download"}"#)
        )
        .status,
        403
    );
    let shares = a.get("/shares").text();
    assert!(
        shares.contains(&token) && shares.contains("files/work/Proj") && shares.contains(&tomorrow),
        "{shares}"
    );

    // A visitor without an account: the password first.
    let v = Browser::new(&server);
    let page = v.get(&link);
    assert_eq!(page.status, 401);
    assert!(page.text().contains("needs a password"), "{}", page.text());
    assert_eq!(v.get(&format!("{link}/dl/plan.txt")).status, 401);
    let wrong = v.post(&format!("{link}/unlock"), &[("password", "guess")]);
    assert_eq!(wrong.status, 401);
    assert!(wrong.text().contains("not right"));
    let right = v.post(&format!("{link}/unlock"), &[("password", "open sesame")]);
    assert_eq!(right.status, 303, "{}", right.text());
    let cookie = right.header("set-cookie").expect("the unlock cookie");
    assert!(
        cookie.contains(&format!("Path={link}"))
            && cookie.contains("HttpOnly")
            && cookie.contains("Secure")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let listing = v.get(&format!("{link}/")).text();
    assert!(
        listing.contains("plan.txt") && listing.contains("sub/") && !listing.contains("secret"),
        "{listing}"
    );
    assert!(v.get(&format!("{link}/f/sub/")).text().contains("deep.txt"));
    assert_eq!(v.get(&format!("{link}/dl/plan.txt")).text(), "plan\n");
    assert_eq!(v.get(&format!("{link}/dl/sub/deep.txt")).text(), "deep\n");
    let big = sha(&m.path.join("files/work/Proj/big.bin"));
    let part = v.curl(&format!("{link}/dl/big.bin"), &["-r", "1000-1999"]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, big[1000..2000]);
    // The folder as a zip, with its tree.
    let zip = v.get(&format!("{link}/zip"));
    assert_eq!(zip.status, 200);
    let zpath = v.dir.path().join("proj.zip");
    std::fs::write(&zpath, &zip.body).expect("write");
    let names = Command::new("unzip")
        .arg("-Z1")
        .arg(&zpath)
        .output()
        .expect("unzip");
    let names = String::from_utf8_lossy(&names.stdout).into_owned();
    assert!(
        names.contains("plan.txt") && names.contains("sub/deep.txt"),
        "{names}"
    );
    // Nothing outside the link: dot-dot, the owner's other files, the signed-in pages.
    for path in [
        format!("{link}/dl/../secret.txt"),
        format!("{link}/dl/%2e%2e/secret.txt"),
        format!("{link}/f/../"),
    ] {
        let r = v.get(&path);
        assert!(matches!(r.status, 400 | 404), "{path}: {}", r.status);
        assert!(!r.text().contains("mine"));
    }
    let r = v.get("/files/files/work/");
    assert_eq!(r.status, 303, "no account, no pages");

    // An upload link (a file request): the visitor sends, sees nothing, replaces nothing.
    let made = a.api(
        "POST",
        "/api/link",
        &csrf,
        Some(r#"{"dir":"files/work","name":"Inbox","access":"upload"}"#),
    );
    assert_eq!(made.status, 200, "{}", made.text());
    let drop = link_path(&made);
    let u = Browser::new(&server);
    let page = u.get(&drop).text();
    assert!(
        page.contains("Send files") && !page.contains("report.txt"),
        "{page}"
    );
    let at = page.find("data-csrf=\"").expect("the page's token") + 11;
    let ucsrf = page[at..at + 32].to_string();
    let sent = u.dir.path().join("report.txt");
    std::fs::write(&sent, b"from a visitor\n").expect("write");
    let start = u.api(
        "POST",
        &format!("{drop}/api/upload"),
        &ucsrf,
        Some(r#"{"dir":"","path":"report.txt","size":15}"#),
    );
    assert_eq!(start.status, 200, "{}", start.text());
    let id = json_field(&start.text(), "id");
    let header = format!("X-CSRF-Token: {ucsrf}");
    let data = format!("@{}", sent.display());
    let r = u.curl(
        &format!("{drop}/api/upload/{id}?offset=0"),
        &[
            "-X",
            "PUT",
            "-H",
            &header,
            "-H",
            "Expect:",
            "--data-binary",
            &data,
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let done = u.api(
        "POST",
        &format!("{drop}/api/upload/{id}/finish"),
        &ucsrf,
        None,
    );
    assert_eq!(done.status, 200, "{}", done.text());
    assert!(done.text().contains("report (2).txt"), "{}", done.text());
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(m.path.join("files/work/Inbox/report (2).txt")).ok()
            == Some("from a visitor\n".into())
    }));
    assert_eq!(
        std::fs::read_to_string(m.path.join("files/work/Inbox/report.txt")).expect("kept"),
        "kept\n"
    );
    for path in [
        format!("{drop}/dl/report.txt"),
        format!("{drop}/zip"),
        format!("{drop}/dl/report%20(2).txt"),
    ] {
        let r = u.get(&path);
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.text().contains("kept") && !r.text().contains("visitor"));
    }
    // The download link's visitor cannot upload through it.
    let r = v.api(
        "POST",
        &format!("{link}/api/upload"),
        &ucsrf,
        Some(r#"{"dir":"","path":"x","size":1}"#),
    );
    assert!(matches!(r.status, 403 | 404), "{}", r.status);

    // Each access is in the audit log (the admin's console), without file names.
    let admin = Browser::new(&server);
    assert_eq!(admin.sign_in("root", "pw").status, 303);
    let audit = admin.get("/admin").text();
    for what in [
        "link-created",
        "link-opened",
        "link-refused",
        "uploaded a file of 15 bytes",
    ] {
        assert!(audit.contains(what), "{what} missing in the audit log");
    }
    assert!(!audit.contains("Proj") && !audit.contains("report"));

    // Revoked: the very next request opens nothing.
    let id = shares
        .split("data-id=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the link's id")
        .to_string();
    let r = a.api(
        "POST",
        "/api/unlink",
        &csrf,
        Some(&format!(r#"{{"id":{id}}}"#)),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = v.get(&format!("{link}/dl/plan.txt"));
    assert_eq!(r.status, 404);
    assert!(r.text().contains("does not exist"));
    assert!(!a.get("/shares").text().contains(&token));

    // Guessing: after 50 failures from one address (the wrong password and the revoked
    // link above count too), even a real link is refused there.
    let g = Browser::new(&server);
    let mut statuses = Vec::new();
    for i in 0..55u32 {
        statuses.push(g.get(&format!("/s/{:048x}", i)).status);
    }
    let guessed = statuses.iter().take_while(|s| **s == 404).count();
    assert_eq!(guessed, 48, "{statuses:?}");
    assert!(
        statuses[guessed..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    assert_eq!(g.get(&drop).status, 429);
    m.unmount();
}

/// A PNG of `w`×`h` pixels in one colour.
fn png(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("png");
    out
}

#[test]
fn photos_show_as_a_grid_of_thumbnails_and_open_in_the_viewer() {
    let server = Server::start_web(&[("alice", "pw", "user"), ("bob", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    let dir = m.path.join("photos/personal");
    std::fs::write(dir.join("a.png"), png(1200, 800, [200, 30, 30])).expect("a");
    std::fs::write(dir.join("b.png"), png(3000, 4000, [30, 200, 30])).expect("b");
    std::fs::write(dir.join("c.png"), png(64, 64, [30, 30, 200])).expect("c");
    std::fs::write(
        dir.join("clip.mp4"),
        b"\0\0\0\x18ftypmp42 not really a video",
    )
    .expect("clip");
    std::fs::write(dir.join("notes.txt"), b"words").expect("notes");
    std::fs::write(dir.join("broken.jpg"), b"\xff\xd8\xff not a photo").expect("broken");
    settle(&m);
    let b = Browser::new(&server);
    assert_eq!(b.sign_in("alice", "pw").status, 303);

    // A photo folder opens as a grid; each photo's picture is its thumbnail by version.
    let page = b.get("/files/photos/personal/").text();
    assert!(page.contains("<ul class=\"grid\">"), "{page}");
    assert!(
        page.contains("src=\"/thumb/photos/personal/a.png?v=1\""),
        "{page}"
    );
    assert!(!page.contains("/thumb/photos/personal/notes.txt"));
    assert!(page.contains("href=\"/view/photos/personal/clip.mp4\""));
    assert!(b
        .get("/files/photos/personal/?view=list")
        .text()
        .contains("<table class=\"listing\">"));
    assert!(!b
        .get("/files/files/")
        .text()
        .contains("<ul class=\"grid\">"));

    let t = b.get("/thumb/photos/personal/b.png?v=1");
    assert_eq!(t.status, 200);
    assert_eq!(t.header("content-type").as_deref(), Some("image/jpeg"));
    assert!(t
        .header("cache-control")
        .is_some_and(|c| c.contains("immutable")));
    let small = image::load_from_memory(&t.body).expect("a JPEG");
    assert_eq!(
        (small.width(), small.height()),
        (240, 320),
        "fits 320, keeps its shape"
    );
    let px = small.to_rgb8().get_pixel(100, 100).0;
    assert!(px[1] > 150 && px[0] < 80, "the photo's colour: {px:?}");
    // Made once: the second answer is the cached one, byte for byte.
    assert_eq!(b.get("/thumb/photos/personal/b.png?v=1").body, t.body);
    // Not photos, broken photos, other people's photos, no session: no thumbnail.
    assert_eq!(b.get("/thumb/photos/personal/notes.txt").status, 404);
    assert_eq!(b.get("/thumb/photos/personal/broken.jpg").status, 400);
    let bob = Browser::new(&server);
    assert_eq!(bob.sign_in("bob", "pw").status, 303);
    assert_eq!(bob.get("/thumb/photos/personal/b.png?v=1").status, 404);
    assert_eq!(
        Browser::new(&server)
            .get("/thumb/photos/personal/b.png")
            .status,
        303
    );

    // A new version gets a new picture.
    std::fs::write(dir.join("a.png"), png(1200, 800, [250, 250, 0])).expect("a again");
    settle(&m);
    assert!(wait_until(std::time::Duration::from_secs(5), || b
        .get("/files/photos/personal/")
        .text()
        .contains("/thumb/photos/personal/a.png?v=2")));
    let px = image::load_from_memory(&b.get("/thumb/photos/personal/a.png?v=2").body)
        .expect("jpeg")
        .to_rgb8()
        .get_pixel(10, 10)
        .0;
    assert!(
        px[0] > 200 && px[1] > 200,
        "the new version's colour: {px:?}"
    );

    // The viewer: the photo, with the folder's previous and next photo or video.
    let v = b.get("/view/photos/personal/b.png").text();
    assert!(v.contains("<img src=\"/dl/photos/personal/b.png\""), "{v}");
    assert!(v.contains("data-prev=\"/view/photos/personal/a.png\""));
    assert!(v.contains("data-next=\"/view/photos/personal/broken.jpg\""));
    assert!(v.contains("2 of 5"), "{v}");
    let clip = b.get("/view/photos/personal/clip.mp4").text();
    assert!(
        clip.contains("<video src=\"/dl/photos/personal/clip.mp4\""),
        "{clip}"
    );
    assert!(!clip.contains("data-next"), "the last one has no next");
    // Shown inline with a media type (so the page's player can play it).
    let dl = b.curl("/dl/photos/personal/clip.mp4", &["-r", "0-3"]);
    assert_eq!(dl.status, 206);
    assert_eq!(dl.header("content-type").as_deref(), Some("video/mp4"));
    assert!(dl
        .header("content-disposition")
        .is_some_and(|d| d.starts_with("inline")));
    assert_eq!(b.get("/view/photos/personal/notes.txt").status, 404);
    m.unmount();
}

#[test]
fn the_account_page_shows_the_quota_and_the_accounts_alerts() {
    let server = Server::start_web(&[("alice", "pw", "user"), ("root", "pw", "admin")]);
    let a = Browser::new(&server);
    assert_eq!(a.sign_in("alice", "pw").status, 303);
    let page = a.get("/account").text();
    assert!(
        page.contains("No alerts.") && page.contains("<td>none</td>"),
        "{page}"
    );

    // The admin gives alice a quota of 1 GiB.
    let admin = Browser::new(&server);
    assert_eq!(admin.sign_in("root", "pw").status, 303);
    let csrf = admin.csrf();
    let r = admin.api(
        "POST",
        "/api/admin",
        &csrf,
        Some(r#"{"op":"quota","name":"alice","gib":1}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Someone guesses alice's password: her account is locked, and her page says so.
    let thief = Browser::new(&server);
    for _ in 0..5 {
        assert_eq!(thief.sign_in("alice", "guess").status, 401);
    }
    // An app password for a WebDAV client: shown once, listed by name, ended.
    let csrf_a = a.csrf();
    let made = a.api(
        "POST",
        "/api/app-password",
        &csrf_a,
        Some(r#"{"name":"phone"}"#),
    );
    assert_eq!(made.status, 200, "{}", made.text());
    let made: serde_json::Value = serde_json::from_str(&made.text()).expect("json");
    let secret = made["secret"].as_str().expect("a secret").to_string();
    assert_eq!(secret.len(), 34, "{made}");
    assert_eq!(
        a.api("POST", "/api/app-password", "", Some(r#"{"name":"x"}"#))
            .status,
        403,
        "CSRF"
    );
    let listed = a.get("/account").text();
    assert!(
        listed.contains("<td>phone</td>") && !listed.contains(&secret),
        "{listed}"
    );
    let r = a.api(
        "POST",
        "/api/app-password/revoke",
        &csrf_a,
        Some(r#"{"name":"phone"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!a.get("/account").text().contains("<td>phone</td>"));
    let page = a.get("/account").text();
    assert!(page.contains("<meter id=\"quota\""), "{page}");
    assert!(page.contains("0 B of 1.0 GiB (0%)"), "{page}");
    assert!(
        page.contains("security") && page.contains("5 failed logins in a row for alice"),
        "{page}"
    );
}
