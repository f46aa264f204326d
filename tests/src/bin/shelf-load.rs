//! `shelf-load`: simulated devices speaking the Shelf protocol (no mounts) against one
//! server or several behind HAProxy, on loopback only, for a bounded time.
//!
//! It starts what it measures, in a temporary folder, with the same helpers the tests use:
//! one `shelf-server` (sled), or with `--servers N` N servers of one store (PostgreSQL 15 +
//! one Garage node + HAProxy in front). Then `--devices` busy devices, each on its own TLS
//! connection, run a mix of list, stat, create, small commit (4 KiB, inline), large commit
//! (1 MiB in four 256 KiB chunks: `PutChunks` + `Commit`) and read (a 4 KiB file read
//! cold, `GetSmallFile`) back to back for `--seconds`, and it prints ops/s and p50/p99 per
//! kind. With `--idle M`, M more connections then hold the account's change feed: it
//! prints the servers' memory per connection and how long one change takes to reach all
//! of them.

use shelf_protocol::frame::{FrameReader, FrameWriter};
use shelf_protocol::{
    ChunkBody, ChunkId, ChunkRef, ClientFrame, NodeId, Request, Response, ServerFrame, Timestamp,
    MAGIC, PROTOCOL_VERSION,
};
use shelf_tests::garage::Garage;
use shelf_tests::haproxy::Haproxy;
use shelf_tests::postgres::Postgres;
use shelf_tests::{env_refs, Server};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const USAGE: &str = "\
usage: shelf-load [--servers N] [--devices N] [--seconds S] [--idle M]

Starts a store (one shelf-server; or N servers on PostgreSQL and Garage behind HAProxy) on
loopback ports in a temporary folder, runs simulated devices against it and prints
operations per second and p50/p99 latency per kind of request.

  --servers N   servers of the store (default 1: one server on sled)
  --devices N   busy devices, each on its own connection (default 50, at most 1000)
  --seconds S   how long they run (default 20, at most 600)
  --idle M      connections that then hold the change feed (default 0, at most 5000)
";

/// Kinds of operation, in the order they are printed.
const KINDS: [&str; 6] = ["list", "stat", "create", "small", "large", "read"];
/// How often each kind comes up, out of the sum.
const MIX: [u32; 6] = [20, 30, 10, 20, 5, 15];

struct Args {
    servers: usize,
    devices: usize,
    seconds: u64,
    idle: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        servers: 1,
        devices: 50,
        seconds: 20,
        idle: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            print!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n{USAGE}"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| anyhow::anyhow!("{flag}: {value:?} is not a number"))?;
        match flag.as_str() {
            "--servers" => a.servers = n.clamp(1, 8) as usize,
            "--devices" => a.devices = n.clamp(1, 1000) as usize,
            "--seconds" => a.seconds = n.clamp(1, 600),
            "--idle" => a.idle = n.min(5000) as usize,
            _ => anyhow::bail!("unknown option {flag}\n{USAGE}"),
        }
    }
    Ok(a)
}

/// One protocol connection, one request at a time.
struct Conn {
    reader: FrameReader<ReadHalf<TlsStream<TcpStream>>>,
    writer: FrameWriter<WriteHalf<TlsStream<TcpStream>>>,
    next: u64,
}

impl Conn {
    async fn open(addr: &str, fingerprint: &str) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let verifier = shelf::remote::tls::PinnedVerifier::new(Some(fingerprint.to_string()));
        let config = shelf::remote::tls::client_config(verifier)?;
        let name = rustls::pki_types::ServerName::try_from("shelf")?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let (r, w) = tokio::io::split(tls);
        let mut conn = Conn {
            reader: FrameReader::new(r),
            writer: FrameWriter::new(w),
            next: 1,
        };
        conn.writer
            .send(&ClientFrame::Hello {
                magic: MAGIC,
                version: PROTOCOL_VERSION,
                client: "shelf-load".into(),
            })
            .await?;
        match conn.reader.read::<ServerFrame>().await? {
            Some(ServerFrame::Hello { .. }) => Ok(conn),
            other => anyhow::bail!("no hello from the server: {other:?}"),
        }
    }

    async fn call(&mut self, body: Request) -> anyhow::Result<Response> {
        let id = self.next;
        self.next += 1;
        self.writer.send(&ClientFrame::Request { id, body }).await?;
        loop {
            match self.reader.read::<ServerFrame>().await? {
                Some(ServerFrame::Response { id: got, result }) if got == id => {
                    return result.map_err(|e| anyhow::anyhow!("{e}"))
                }
                Some(_) => continue,
                None => anyhow::bail!("the server closed the connection"),
            }
        }
    }

    /// The next pushed change (for idle connections holding the feed).
    async fn event(&mut self) -> anyhow::Result<()> {
        loop {
            match self.reader.read::<ServerFrame>().await? {
                Some(ServerFrame::Event(_)) => return Ok(()),
                Some(_) => continue,
                None => anyhow::bail!("the server closed the connection"),
            }
        }
    }
}

/// A small, fast random source (xorshift), one per device.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n.div_ceil(8))
            .flat_map(|_| self.next().to_le_bytes())
            .take(n)
            .collect()
    }
}

fn chunk(data: Vec<u8>) -> ChunkBody {
    ChunkBody {
        id: ChunkId(*blake3::hash(&data).as_bytes()),
        data,
    }
}

fn attr_of(r: Response) -> anyhow::Result<shelf_protocol::Attr> {
    match r {
        Response::Attr(a) => Ok(a),
        other => anyhow::bail!("expected attributes, got {other:?}"),
    }
}

/// A busy device: its folder, files, and what it measured.
struct Device {
    conn: Conn,
    dir: NodeId,
    /// Its small files and their versions.
    files: Vec<(NodeId, u64)>,
    /// Its large file and version.
    large: (NodeId, u64),
    rng: Rng,
    made: u64,
}

impl Device {
    async fn start(
        addr: &str,
        fingerprint: &str,
        token: &str,
        parent: NodeId,
        i: usize,
    ) -> anyhow::Result<Device> {
        let mut conn = Conn::open(addr, fingerprint).await?;
        conn.call(Request::Resume {
            token: token.to_string(),
        })
        .await?;
        let dir = attr_of(
            conn.call(Request::Mkdir {
                parent,
                name: format!("device{i}"),
                mode: 0o755,
                id: None,
            })
            .await?,
        )?
        .node;
        let mut d = Device {
            conn,
            dir,
            files: Vec::new(),
            large: (0, 0),
            rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1)),
            made: 0,
        };
        for k in 0..20 {
            let node = d.create(&format!("f{k}")).await?;
            d.files.push((node, 0));
            d.small(k).await?;
        }
        d.large.0 = d.create("large").await?;
        Ok(d)
    }

    async fn create(&mut self, name: &str) -> anyhow::Result<NodeId> {
        Ok(attr_of(
            self.conn
                .call(Request::Create {
                    parent: self.dir,
                    name: name.to_string(),
                    mode: 0o644,
                    exclusive: true,
                    id: None,
                })
                .await?,
        )?
        .node)
    }

    /// A 4 KiB file's new content, inline with its commit.
    async fn small(&mut self, k: usize) -> anyhow::Result<()> {
        let (node, base) = self.files[k];
        let body = chunk(self.rng.bytes(4096));
        let a = attr_of(
            self.conn
                .call(Request::Commit {
                    node,
                    base_version: base,
                    chunks: vec![ChunkRef {
                        id: body.id,
                        len: 4096,
                    }],
                    inline: vec![body],
                    mtime: Timestamp::now(),
                    durable: false,
                })
                .await?,
        )?;
        self.files[k].1 = a.version;
        Ok(())
    }

    /// 1 MiB of new content: four 256 KiB chunks sent, then committed.
    async fn large(&mut self) -> anyhow::Result<()> {
        let bodies: Vec<ChunkBody> = (0..4).map(|_| chunk(self.rng.bytes(256 << 10))).collect();
        let refs = bodies
            .iter()
            .map(|b| ChunkRef {
                id: b.id,
                len: b.data.len() as u32,
            })
            .collect();
        let (node, base) = self.large;
        self.conn
            .call(Request::PutChunks {
                node,
                chunks: bodies,
            })
            .await?;
        let a = attr_of(
            self.conn
                .call(Request::Commit {
                    node,
                    base_version: base,
                    chunks: refs,
                    inline: Vec::new(),
                    mtime: Timestamp::now(),
                    durable: false,
                })
                .await?,
        )?;
        self.large.1 = a.version;
        Ok(())
    }

    async fn run_one(&mut self, kind: usize) -> anyhow::Result<()> {
        let k = (self.rng.next() % self.files.len() as u64) as usize;
        match KINDS[kind] {
            "list" => {
                self.conn
                    .call(Request::ReadDir {
                        dir: self.dir,
                        after: None,
                        limit: 1000,
                    })
                    .await?;
            }
            "stat" => {
                self.conn
                    .call(Request::Lookup {
                        parent: self.dir,
                        name: format!("f{k}"),
                    })
                    .await?;
            }
            "create" => {
                self.made += 1;
                let name = format!("c{}", self.made);
                self.create(&name).await?;
            }
            "small" => self.small(k).await?,
            "large" => self.large().await?,
            _ => {
                self.conn
                    .call(Request::GetSmallFile {
                        node: self.files[k].0,
                        max: 65536,
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

/// The kind of the next operation, by [`MIX`].
fn pick(rng: &mut Rng) -> usize {
    let total: u32 = MIX.iter().sum();
    let mut r = (rng.next() % u64::from(total)) as u32;
    for (i, w) in MIX.iter().enumerate() {
        if r < *w {
            return i;
        }
        r -= w;
    }
    0
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // What it measures, started here and stopped at the end (guards).
    let mut keep: (
        Option<Postgres>,
        Option<Garage>,
        Vec<Server>,
        Option<Haproxy>,
    ) = (None, None, Vec::new(), None);
    // Four devices per account, like a user's laptop, desktop, phone and tablet.
    let accounts = args.devices.div_ceil(4);
    let names: Vec<String> = (0..accounts).map(|j| format!("load{j}")).collect();
    let users: Vec<(&str, &str, &str)> = names
        .iter()
        .map(|n| (n.as_str(), "load-password", "user"))
        .collect();
    let (addr, fingerprint) = if args.servers == 1 {
        let s = Server::start(&users);
        let a = (s.addr.clone(), s.fingerprint.clone());
        keep.2.push(s);
        a
    } else {
        let pg = Postgres::start();
        let garage = Garage::start();
        let mut env = pg.env();
        env.extend(garage.env());
        let first = Server::start_with_env(&users, &env_refs(&env));
        let mut servers = vec![first];
        for _ in 1..args.servers {
            let next = servers[0].join();
            servers.push(next);
        }
        let addrs: Vec<&str> = servers.iter().map(|s| s.addr.as_str()).collect();
        let lb = Haproxy::start(&addrs);
        let a = (lb.addr.clone(), servers[0].fingerprint.clone());
        keep = (Some(pg), Some(garage), servers, Some(lb));
        a
    };
    if !addr.starts_with("127.") {
        anyhow::bail!("loopback only: {addr}");
    }
    let pids: Vec<u32> = keep.2.iter().filter_map(Server::pid).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(run(&args, accounts, &addr, &fingerprint, &pids));
    drop(rt);
    drop(keep);
    report
}

async fn run(
    args: &Args,
    accounts: usize,
    addr: &str,
    fingerprint: &str,
    pids: &[u32],
) -> anyhow::Result<()> {
    // One sign-in per account; its devices resume that session on their own connections.
    let mut first = None;
    let mut sessions = Vec::new();
    for j in 0..accounts {
        let mut c = Conn::open(addr, fingerprint).await?;
        let (token, root) = match c
            .call(Request::Login {
                user: format!("load{j}"),
                password: "load-password".into(),
                device: "shelf-load".into(),
            })
            .await?
        {
            Response::Session { token, root, .. } => (token, root.node),
            other => anyhow::bail!("login answered {other:?}"),
        };
        let files = attr_of(
            c.call(Request::Lookup {
                parent: root,
                name: "files".into(),
            })
            .await?,
        )?
        .node;
        sessions.push((token, files));
        if first.is_none() {
            first = Some(c);
        }
    }
    let Some(mut first) = first else {
        anyhow::bail!("no account");
    };
    let (token, files) = sessions[0].clone();
    println!(
        "{} server(s), {} busy devices of {accounts} accounts for {} s, {} idle feeds; mix (per 100) list {} stat {} create {} small {} large {} read {}",
        args.servers, args.devices, args.seconds, args.idle, MIX[0], MIX[1], MIX[2], MIX[3], MIX[4], MIX[5]
    );
    if args.idle > 0 {
        // On a quiet store, before the busy devices: memory per held feed.
        let before: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
        let mut idle = Vec::new();
        for _ in 0..args.idle {
            let mut c = Conn::open(addr, fingerprint).await?;
            c.call(Request::Resume {
                token: token.clone(),
            })
            .await?;
            c.call(Request::Subscribe { after: None }).await?;
            idle.push(c);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
        // One change; when does each feed hear it?
        let sent = Instant::now();
        let waits: Vec<_> = idle
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(10), c.event())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .map(|()| sent.elapsed().as_micros() as u64)
                })
            })
            .collect();
        first
            .call(Request::Mkdir {
                parent: files,
                name: "announced".into(),
                mode: 0o755,
                id: None,
            })
            .await?;
        let mut heard = Vec::new();
        for w in waits {
            if let Some(us) = w.await? {
                heard.push(us);
            }
        }
        heard.sort_unstable();
        println!(
            "idle feeds: {} held, server memory {:.1} KiB per connection ({} -> {} MiB); one change reached {} of them: p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms",
            args.idle,
            after.saturating_sub(before) as f64 / args.idle as f64,
            before / 1024,
            after / 1024,
            heard.len(),
            percentile(&heard, 0.5) as f64 / 1000.0,
            percentile(&heard, 0.99) as f64 / 1000.0,
            heard.last().copied().unwrap_or(0) as f64 / 1000.0
        );
    }
    // Every device sets up its folder first (20 small files each), then all run.
    let mut setups = Vec::new();
    for i in 0..args.devices {
        let (token, files) = sessions[i % accounts].clone();
        let (addr, fp) = (addr.to_string(), fingerprint.to_string());
        setups.push(tokio::spawn(async move {
            Device::start(&addr, &fp, &token, files, i).await
        }));
    }
    let mut devices = Vec::new();
    for s in setups {
        devices.push(s.await??);
    }
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let mut runs = Vec::new();
    for (i, mut d) in devices.into_iter().enumerate() {
        runs.push(tokio::spawn(async move {
            let mut seen: Vec<(usize, u64)> = Vec::new();
            let mut errors = 0u64;
            let mut rng = Rng(0xDEAD_BEEF ^ (i as u64 + 7));
            while Instant::now() < until {
                let kind = pick(&mut rng);
                let start = Instant::now();
                match d.run_one(kind).await {
                    Ok(()) => seen.push((kind, start.elapsed().as_micros() as u64)),
                    Err(_) => errors += 1,
                }
            }
            (seen, errors)
        }));
    }
    let mut by_kind: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    let mut errors = 0;
    for r in runs {
        let (seen, e) = r.await?;
        errors += e;
        for (k, us) in seen {
            by_kind.entry(k).or_default().push(us);
        }
    }
    let secs = args.seconds as f64;
    let total: usize = by_kind.values().map(Vec::len).sum();
    println!(
        "{:<8} {:>9} {:>10} {:>10}",
        "kind", "ops/s", "p50 ms", "p99 ms"
    );
    for (k, mut v) in by_kind {
        v.sort_unstable();
        println!(
            "{:<8} {:>9.0} {:>10.2} {:>10.2}",
            KINDS[k],
            v.len() as f64 / secs,
            percentile(&v, 0.5) as f64 / 1000.0,
            percentile(&v, 0.99) as f64 / 1000.0
        );
    }
    println!(
        "{:<8} {:>9.0}   ({errors} failed)",
        "all",
        total as f64 / secs
    );

    Ok(())
}
