//! End-to-end: encryption at rest and integrity. A stolen data folder shows no content and
//! no names; a changed chunk reads as an I/O error (never as data) and raises an alert; the
//! master key can be rotated.

use shelf_tests::*;
use std::path::Path;
use std::process::Command;

/// Every file below `dir`, as bytes.
fn all_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p.display().to_string(), b));
            }
        }
    }
    out
}

fn found_in(files: &[(String, Vec<u8>)], needle: &str) -> Vec<String> {
    files
        .iter()
        .filter(|(_, b)| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|(p, _)| p.clone())
        .collect()
}

#[test]
fn the_data_folder_holds_no_plaintext_content_or_names() {
    let mut server = Server::start(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh(r#"
        set -e
        mkdir -p files/work/Zebra-Secret-Folder-7391
        for i in $(seq 1 20000); do printf 'Marker-Content-Quokka-%05d ' $i; done \
            > files/work/Zebra-Secret-Folder-7391/Quokka-Report-5512.txt
        echo 'a small Marker-Content-Wombat note' > files/personal/Wombat-Diary-8842.txt
        python3 -c "import os; os.setxattr('files/personal/Wombat-Diary-8842.txt', 'user.tag', b'Xattr-Value-Narwhal')"
        ln -s Target-Ocelot-3391 files/personal/Link-Ibis-2231
        mv files/personal/Wombat-Diary-8842.txt files/personal/Wombat-Renamed-1177.txt
        echo 'first Marker-Content-Tapir' > files/personal/Deleted-Tapir-6650.txt
    "#);
    // Committed (fsync), then deleted: the file is kept for restoring (a grave).
    m.sh(r#"python3 -c "import os; f = os.open('files/personal/Deleted-Tapir-6650.txt', os.O_RDWR); os.fsync(f)""#);
    m.sh("rm files/personal/Deleted-Tapir-6650.txt");
    m.unmount();
    // Everything is on disk once the server stopped.
    server.stop();

    let files = all_bytes(&server.data);
    // The scan reads the database and packs as they are: account names are not secret and
    // are found, which shows the scan would find a name if one were there.
    assert!(
        !found_in(&files, "alice").is_empty(),
        "the scan sees sled's bytes"
    );
    for secret in [
        "Marker-Content",
        "Quokka",
        "Wombat",
        "Zebra-Secret",
        "Narwhal",
        "Ocelot",
        "Ibis",
        "Tapir",
        "Renamed",
    ] {
        let hits = found_in(&files, secret);
        assert!(hits.is_empty(), "{secret:?} in plaintext in {hits:?}");
    }

    // And it is all still there for its owner.
    server.start_again();
    let dev2 = Device::new();
    dev2.login(&server, "alice", "pw", "desktop");
    let m2 = dev2.mount();
    let report = m2.sh("cat files/work/Zebra-Secret-Folder-7391/Quokka-Report-5512.txt");
    assert!(report.starts_with("Marker-Content-Quokka-00001 "));
    assert!(report.trim_end().ends_with("Marker-Content-Quokka-20000"));
    assert_eq!(
        m2.sh("cat files/personal/Wombat-Renamed-1177.txt"),
        "a small Marker-Content-Wombat note\n"
    );
    assert_eq!(
        m2.sh("readlink files/personal/Link-Ibis-2231"),
        "Target-Ocelot-3391\n"
    );
    let versions = m2.sh("ls files/personal/.versions");
    assert!(
        versions.contains("Deleted-Tapir-6650.txt.v01"),
        "{versions}"
    );
}

/// Flips one byte in the middle of the body of every pack record longer than `min` bytes.
/// A record is `SPK1 ‖ account (8) ‖ chunk id (32) ‖ length (4, BE) ‖ body`.
fn tamper_packs(data: &Path, min: usize) -> usize {
    let mut changed = 0;
    for e in std::fs::read_dir(data.join("packs"))
        .expect("packs")
        .flatten()
    {
        let mut bytes = std::fs::read(e.path()).expect("read pack");
        let mut at = 0;
        while at + 48 <= bytes.len() {
            assert_eq!(&bytes[at..at + 4], b"SPK1", "a pack record");
            let len = u32::from_be_bytes(bytes[at + 44..at + 48].try_into().expect("4")) as usize;
            if len > min {
                bytes[at + 48 + len / 2] ^= 0x40;
                changed += 1;
            }
            at += 48 + len;
        }
        std::fs::write(e.path(), &bytes).expect("write pack");
    }
    changed
}

#[test]
fn a_tampered_chunk_reads_as_an_io_error_raises_alerts_and_scrub_reports_it() {
    let mut server = Server::start(&[("alice", "pw", "user"), ("root", "rootpw", "admin")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh("head -c 300000 /dev/urandom > files/photo.bin && echo fine > files/ok.txt");
    m.unmount();
    server.stop();
    assert!(
        tamper_packs(&server.data, 1000) > 0,
        "the photo's chunks were changed"
    );

    server.start_again();
    // A fresh device: nothing cached, every byte comes from the server.
    let dev2 = Device::new();
    dev2.login(&server, "alice", "pw", "desktop");
    let m2 = dev2.mount();
    let err = sh_fails(&m2.path, "cat files/photo.bin > /dev/null");
    assert!(err.contains("Input/output error"), "{err}");
    assert_eq!(
        m2.sh("cat files/ok.txt"),
        "fine\n",
        "other files are unharmed"
    );
    m2.unmount();
    // The owner and the admin are told.
    let alice = dev2.run(&["events"]);
    assert!(
        alice.contains("alert") && alice.contains("integrity"),
        "{alice}"
    );
    let admin = Device::new();
    admin.login(&server, "root", "rootpw", "console");
    let seen = admin.run(&["events"]);
    assert!(
        seen.contains("integrity") && seen.contains("alice"),
        "{seen}"
    );

    server.stop();
    let out = Command::new(server_bin())
        .args(["scrub", "--data"])
        .arg(&server.data)
        .output()
        .expect("shelf-server scrub");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAILED alice chunk"), "{text}");
    assert!(!text.contains(" 0 failed"), "{text}");
}

#[test]
fn rotating_the_master_key_keeps_data_readable_and_retires_the_old_key() {
    let mut server = Server::start(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh("echo 'kept across rotation' > files/notes.txt");
    m.unmount();
    server.stop();

    let key_path = server.data.join("master.key");
    let old = std::fs::read(&key_path).expect("old key");
    let out = Command::new(server_bin())
        .args(["rotate-master-key", "--data"])
        .arg(&server.data)
        .output()
        .expect("rotate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("re-wrapped"), "{text}");
    let new = std::fs::read(&key_path).expect("new key");
    assert_eq!(new.len(), 32);
    assert_ne!(old, new);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_path)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!server.data.join("master.key.new").exists());

    // Healthy store: scrub finds nothing.
    let out = Command::new(server_bin())
        .args(["scrub", "--data"])
        .arg(&server.data)
        .output()
        .expect("scrub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    server.start_again();
    let dev2 = Device::new();
    dev2.login(&server, "alice", "pw", "desktop");
    let m2 = dev2.mount();
    assert_eq!(m2.sh("cat files/notes.txt"), "kept across rotation\n");
    m2.unmount();
    server.stop();

    // The old key no longer opens the store: a clear refusal at start.
    let old_key = server.data.join("old.key");
    std::fs::write(&old_key, &old).expect("write");
    std::fs::set_permissions(&old_key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = Command::new(server_bin())
        .args(["run", "--listen", "127.0.0.1:0", "--data"])
        .arg(&server.data)
        .arg("--master-key")
        .arg(&old_key)
        .output()
        .expect("run with the old key");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("master key"), "{err}");
    // A world-readable key file is refused too.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = Command::new(server_bin())
        .args(["run", "--listen", "127.0.0.1:0", "--data"])
        .arg(&server.data)
        .output()
        .expect("run with a readable key");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

#[test]
fn guessing_passwords_locks_the_account_and_tells_owner_and_admin() {
    let lockout = 10;
    let server = Server::start_with_env(
        &[("alice", "right", "user"), ("root", "rootpw", "admin")],
        &[("SHELF_LOCKOUT_SECS", &lockout.to_string())],
    );
    // Alice's laptop was logged in before the attack; the admin's console too.
    let laptop = Device::new();
    laptop.login(&server, "alice", "right", "laptop");
    let admin = Device::new();
    admin.login(&server, "root", "rootpw", "console");

    let attacker = Device::new();
    let started = std::time::Instant::now();
    let mut refused = Vec::new();
    for _ in 0..20 {
        let out = attacker.login_output(&server, "alice", "guess", "evil");
        assert!(!out.status.success());
        refused.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    assert!(
        refused[0].contains("wrong user name or password"),
        "{}",
        refused[0]
    );
    assert!(
        refused[5..].iter().all(|e| e.contains("locked")),
        "locked after 5 failures: {refused:?}"
    );
    // The right password is refused while the lock lasts.
    let out = attacker.login_output(&server, "alice", "right", "evil");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked"));
    assert!(
        started.elapsed().as_secs() < lockout,
        "the test outran the lock"
    );

    for (who, dev) in [("alice", &laptop), ("admin", &admin)] {
        let events = dev.run(&["events"]);
        assert!(
            events.contains("alert") && events.contains("security") && events.contains("locked"),
            "{who} sees the alert: {events}"
        );
    }
    // (The laptop's session made before the attack kept working: a lock stops logins,
    // not devices already trusted; `shelf events` above went through it.)

    // Once the lock ends the owner gets in.
    std::thread::sleep(
        std::time::Duration::from_secs(lockout + 1).saturating_sub(started.elapsed()),
    );
    attacker.login(&server, "alice", "right", "evil");
}

#[test]
fn a_revoked_device_is_refused_at_once() {
    use shelf_protocol::{ErrorCode, Request};
    let server = Server::start(&[("alice", "pw", "user")]);
    let phone = Device::new();
    phone.login(&server, "alice", "pw", "phone");
    let laptop = Device::new();
    laptop.login(&server, "alice", "pw", "laptop");
    // A live connection of the laptop, as a mount holds one.
    let (remote, root) = server.connect("alice", "pw", "laptop");
    assert!(remote.call(Request::GetAttr { node: root.node }).is_ok());

    let listed = phone.run(&["devices"]);
    assert!(
        listed.contains("laptop") && listed.contains("phone"),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("phone") && l.contains("(this device)")),
        "{listed}"
    );
    assert!(phone
        .run(&["devices", "revoke", "laptop"])
        .contains("signed out laptop"));

    // The open connection's very next request is refused, and so is a new one.
    match remote.call(Request::GetAttr { node: root.node }) {
        Err(shelf::remote::RemoteError::Server(w)) => {
            assert_eq!(w.code, ErrorCode::SessionExpired, "{w:?}")
        }
        other => panic!("a revoked session was served: {other:?}"),
    }
    let out = laptop
        .shelf()
        .args(["devices"])
        .output()
        .expect("shelf devices");
    assert!(!out.status.success());
    let listed = phone.run(&["devices"]);
    assert!(!listed.contains("laptop"), "{listed}");
    // Revoking what is not there says so.
    let out = phone
        .shelf()
        .args(["devices", "revoke", "toaster"])
        .output()
        .expect("revoke");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no device toaster"));
}

fn admin_out(dev: &Device, args: &[&str], password: Option<&str>) -> std::process::Output {
    let mut cmd = dev.shelf();
    cmd.arg("admin").args(args);
    if let Some(p) = password {
        cmd.env("SHELF_PASSWORD", p);
    }
    cmd.output().expect("shelf admin")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn admins_manage_accounts_quotas_and_see_the_audit_log_others_cannot() {
    use shelf_protocol::{ChunkBody, ChunkId, ErrorCode, Request};
    let server = Server::start(&[
        ("root", "rootpw", "admin"),
        ("alice", "pw", "user"),
        ("vic", "pw", "viewer"),
    ]);
    let admin = Device::new();
    admin.login(&server, "root", "rootpw", "console");
    let alice = Device::new();
    alice.login(&server, "alice", "pw", "laptop");

    let users = ok(&admin_out(&admin, &["users"], None));
    for (u, r) in [("root", "admin"), ("alice", "user"), ("vic", "viewer")] {
        assert!(
            users.lines().any(|l| l.starts_with(u) && l.contains(r)),
            "{users}"
        );
    }
    // Not an admin: refused, whatever the command.
    for args in [&["users"][..], &["role", "alice", "admin"], &["audit"]] {
        let out = admin_out(&alice, args, None);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("permission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Add, then demote to viewer: writes are refused read-only, reads work.
    ok(&admin_out(
        &admin,
        &["add", "bob", "--role", "user"],
        Some("bobpw"),
    ));
    let bob = Device::new();
    bob.login(&server, "bob", "bobpw", "pc");
    ok(&admin_out(&admin, &["role", "bob", "viewer"], None));
    let m = bob.mount();
    let err = sh_fails(&m.path, "echo x > files/new.txt");
    assert!(err.contains("Read-only file system"), "{err}");
    let err = sh_fails(&m.path, "mkdir files/work/new");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(m.sh("ls files").contains("work"));
    m.unmount();

    // A quota: an upload past it is refused before anything is written.
    ok(&admin_out(
        &admin,
        &["quota", "alice", "--gib", "0.001"],
        None,
    ));
    let (remote, alice_root) = server.connect("alice", "pw", "script");
    let data = vec![5u8; 600 << 10];
    let put = |data: &[u8]| {
        remote.call(Request::PutChunks {
            node: alice_root.node,
            chunks: vec![ChunkBody {
                id: ChunkId(*blake3::hash(data).as_bytes()),
                data: data.to_vec(),
            }],
        })
    };
    assert!(put(&data).is_ok(), "600 KiB fit in 1 MiB");
    match put(&[6u8; 600 << 10]) {
        Err(shelf::remote::RemoteError::Server(w)) => {
            assert_eq!(w.code, ErrorCode::QuotaExceeded)
        }
        other => panic!("past the quota: {other:?}"),
    }
    let users = ok(&admin_out(&admin, &["users"], None));
    let line = users
        .lines()
        .find(|l| l.starts_with("alice"))
        .expect("alice");
    assert!(
        line.contains("600.0 KiB"),
        "only the first chunk is stored: {line}"
    );
    let events = alice.run(&["events"]);
    assert!(events.contains("quota"), "{events}");
    // Through the mount: over the quota the upload is refused for good, so it is not
    // retried: the content is kept on the device and its events say where; the admin has
    // heard of the quota (without file names).
    let m = alice.mount();
    m.sh("head -c 3000000 /dev/urandom > files/big.bin");
    let told = wait_until(std::time::Duration::from_secs(60), || {
        let own = alice.run(&["events", "--last", "50"]);
        own.contains(
            "files/big.bin  (this device: upload refused (over quota): kept on this device as ",
        )
    });
    assert!(told, "{}", alice.run(&["events", "--last", "50"]));
    assert!(!alice.run(&["status"]).contains("ALERT"));
    let seen = admin.run(&["events", "--last", "50"]);
    assert!(seen.contains("alice reached the storage quota"), "{seen}");
    assert!(!seen.contains("big.bin"), "no file names for admins");
    m.unmount_forced();

    // A new password signs every device out.
    ok(&admin_out(&admin, &["passwd", "alice"], Some("newpw")));
    assert!(remote.call(Request::Status).is_err(), "old session refused");
    assert!(!alice
        .login_output(&server, "alice", "pw", "laptop")
        .status
        .success());
    alice.login(&server, "alice", "newpw", "laptop");

    // The last admin stays one; a deleted account cannot log in.
    assert!(!admin_out(&admin, &["role", "root", "user"], None)
        .status
        .success());
    ok(&admin_out(&admin, &["del", "bob"], None));
    assert!(!bob
        .login_output(&server, "bob", "bobpw", "pc")
        .status
        .success());

    let audit = ok(&admin_out(&admin, &["audit", "--last", "200"], None));
    for what in [
        "user-added",
        "role-changed",
        "password-changed",
        "user-deleted",
        "login-failed",
        "alert-quota",
    ] {
        assert!(audit.contains(what), "{what} missing from\n{audit}");
    }
    // The log an admin reads names no file of anyone.
    assert!(!audit.contains("files/"), "{audit}");
}

/// A CA and a server certificate it signed for `names`, as PEM (ca cert, server cert,
/// server key).
fn ca_signed(names: &[&str]) -> (String, String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("signed");
    (
        ca.pem(),
        cert.pem(),
        key.serialize_pem(),
        ca_key.serialize_pem(),
    )
}

fn install_cert(server: &Server, cert: &str, key: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(server.data.join("tls/cert.pem"), cert).expect("cert");
    let k = server.data.join("tls/key.pem");
    std::fs::write(&k, key).expect("key");
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn a_ca_file_is_trusted_instead_of_a_pin_and_other_certificates_are_refused() {
    let mut server = Server::start(&[("alice", "pw", "user")]);
    server.stop();
    let (ca, cert, key, _) = ca_signed(&["127.0.0.1", "localhost"]);
    install_cert(&server, &cert, &key);
    server.start_again();
    let dir = tempfile::tempdir().expect("tmp");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).expect("write ca");

    let dev = Device::new();
    let login = |dev: &Device, ca: &Path| {
        dev.shelf()
            .args([
                "login",
                &server.addr,
                "--user",
                "alice",
                "--device",
                "laptop",
            ])
            .arg("--ca-file")
            .arg(ca)
            .env("SHELF_PASSWORD", "pw")
            .output()
            .expect("shelf login")
    };
    let out = login(&dev, &ca_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = dev.mount();
    m.sh("echo via-ca > files/ca.txt");
    assert_eq!(m.sh("cat files/ca.txt"), "via-ca\n");
    m.unmount();

    // A CA that did not sign the server's certificate: refused, nothing saved.
    let (other_ca, _, _, _) = ca_signed(&["127.0.0.1"]);
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, &other_ca).expect("write");
    let stranger = Device::new();
    let out = login(&stranger, &other_file);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not trusted by the CA file"), "{err}");
    assert!(!stranger.config.join("login").exists());

    // The server's certificate replaced by one the CA signed for another name: the device
    // that trusts the CA refuses it too.
    server.stop();
    let (_, wrong_name, wrong_key, _) = ca_signed(&["files.example.org"]);
    install_cert(&server, &wrong_name, &wrong_key);
    server.start_again();
    let out = dev.shelf().args(["devices"]).output().expect("devices");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not trusted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A device whose uploads keep failing tells the server: the account hears which file,
/// its admins hear that a device of the account has trouble (without the file's name).
#[test]
fn a_device_that_keeps_failing_to_sync_alerts_the_account_and_its_admins() {
    use shelf_protocol::Request;
    let server = Server::start(&[("root", "rootpw", "admin"), ("alice", "pw", "user")]);
    let admin = Device::new();
    admin.login(&server, "root", "rootpw", "console");
    let alice = Device::new();
    alice.login(&server, "alice", "pw", "laptop");
    let (remote, _) = server.connect("alice", "pw", "laptop");
    remote
        .call(Request::ReportSyncFailure {
            path: "files/big.bin".into(),
            error: "no space left on the server".into(),
        })
        .expect("report");
    let told = wait_until(std::time::Duration::from_secs(10), || {
        admin
            .run(&["events", "--last", "50"])
            .contains("sync: alice on laptop: uploads keep failing: no space left on the server")
    });
    assert!(told, "{}", admin.run(&["events", "--last", "50"]));
    assert!(!admin.run(&["events", "--last", "50"]).contains("big.bin"));
    let own = alice.run(&["events", "--last", "50"]);
    assert!(
        own.contains("sync: alice on laptop: files/big.bin keeps failing to upload"),
        "{own}"
    );
}

#[test]
fn app_passwords_are_shown_once_listed_and_revoked_from_the_cli() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let secret = dev.run(&["app-password", "add", "phone"]);
    let secret = secret.trim();
    assert_eq!(secret.len(), 34, "{secret}");
    assert_eq!(secret.split('-').count(), 7, "{secret}");
    // The same name twice is refused; the list never shows a secret.
    let out = dev
        .shelf()
        .args(["app-password", "add", "phone"])
        .output()
        .expect("add");
    assert!(!out.status.success());
    let listed = dev.run(&["app-password", "list"]);
    assert!(
        listed.contains("phone") && !listed.contains(secret),
        "{listed}"
    );
    // The server's data folder does not hold it either.
    let found = Command::new("grep")
        .args(["-rqF", secret])
        .arg(&server.data)
        .status()
        .expect("grep");
    assert!(!found.success(), "the secret is on the server's disk");
    assert!(dev
        .run(&["app-password", "revoke", "phone"])
        .contains("ended"));
    assert!(!dev.run(&["app-password", "list"]).contains("phone"));
    let out = dev
        .shelf()
        .args(["app-password", "revoke", "phone"])
        .output()
        .expect("revoke");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no app password named phone"));
}
