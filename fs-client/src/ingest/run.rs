//! One import or backup run: copies every file under a source folder into the store,
//! sorted by kind (`photos/`, `videos/`, `files/`) into a destination category
//! (`work`, `work/WebProject`), keeping the source's folders as sub-categories.
//!
//! For each file, in parallel over one connection:
//! * known to the [`Index`] with the same size and mtime: skipped, not even read;
//! * known, but changed: chunked; if the content differs it becomes a new version of the
//!   same store file (only chunks the server lacks are sent), else only the mtime moves;
//! * new: classified ([`classify`]), then created in its category folder. A name already
//!   taken by other content is never overwritten: the file gets `NAME (2).EXT` (and the
//!   report says so); a store file with the same content is adopted without sending.
//!
//! Files deleted from the source stay in the store and are reported. Modes and mtimes are
//! kept. The run names itself to the server ([`shelf_protocol::Request::SetAgent`]) so that
//! the device's own mount sees its changes like another device's.

use super::classify::{self, Kind};
use super::index::{content_hash, Index, Sent};
use crate::core::FsError;
use crate::remote::calls::Committed;
use crate::remote::{Remote, RemoteError};
use crate::sync::LockOrRecover;
use crate::transfer;
use shelf_protocol::names::validate_name;
use shelf_protocol::{Attr, ChunkRef, ErrorCode, NodeId, NodeKind, Request, Timestamp};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Files sent at once (each its own request chain on the shared connection).
const WORKERS: usize = 8;
/// How often the index is saved during a run.
const SAVE_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Remote(#[from] RemoteError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Fs(#[from] FsError),
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IngestError + '_ {
    move |source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What to run.
pub struct Options<'a> {
    pub src: &'a Path,
    /// The destination below each kind: `work`, `personal/Trip`.
    pub into: &'a str,
    pub dry_run: bool,
    /// Called once the source is scanned, with (files, bytes) in it.
    pub scanned: &'a (dyn Fn(u64, u64) + Sync),
    /// Called after each file with (files done, bytes done).
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
}

/// A file found in the source.
#[derive(Clone, Debug)]
pub struct Found {
    /// Path relative to the source, `/`-separated.
    pub rel: String,
    pub size: u64,
    pub mtime: Timestamp,
    pub mode: u32,
}

/// (source path, why) of something not copied.
pub type Skipped = (String, String);

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub files: u64,
    pub bytes: u64,
    /// (source path, store path) of files sent as new files.
    pub new: Vec<(String, String)>,
    /// (source path, store path) of files sent as new versions.
    pub modified: Vec<(String, String)>,
    pub unchanged: u64,
    /// Files whose content the store already held under their name (adopted, not sent).
    pub already_there: u64,
    /// (source path, store path) of new files that got a suffix: the name was taken.
    pub renamed: Vec<(String, String)>,
    /// (source path, store path) of changed files the store had changed too: both kept.
    pub conflicts: Vec<(String, String)>,
    /// (source path, why) of what was not copied (links, devices, unusable names).
    pub skipped: Vec<(String, String)>,
    /// (source path, store path) of files gone from the source since the last run: kept.
    pub deleted: Vec<(String, String)>,
    /// (source path, error) of files that failed.
    pub failed: Vec<(String, String)>,
    /// Bytes of new or changed files read and chunked.
    pub bytes_read: u64,
    /// Bytes this run put on the wire (TLS included).
    pub bytes_sent: u64,
    pub elapsed: Duration,
    /// Files and bytes per top-level category (for `--dry-run` totals).
    pub per_kind: std::collections::BTreeMap<&'static str, (u64, u64)>,
}

/// What is under a source folder.
#[derive(Debug, Default)]
pub struct Scan {
    /// Regular files, in name order, depth first.
    pub files: Vec<Found>,
    /// Folder (source-relative, `/`-separated) → its permission bits and mtime.
    pub dirs: HashMap<String, (u32, Timestamp)>,
    /// Symbolic links, devices and names the store cannot hold.
    pub skipped: Vec<Skipped>,
}

fn mtime_of(m: &std::fs::Metadata) -> Timestamp {
    Timestamp {
        secs: m.mtime(),
        nanos: m.mtime_nsec() as u32,
    }
}

/// Lists what is under `src`.
pub fn scan(src: &Path) -> Result<Scan, IngestError> {
    let meta = std::fs::metadata(src).map_err(io(src))?;
    if !meta.is_dir() {
        return Err(IngestError::Invalid(format!(
            "{} is not a folder",
            src.display()
        )));
    }
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let mut dirs = HashMap::new();
    let mut stack = vec![(src.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .collect::<Result<_, _>>()
            .map_err(io(&dir))?;
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            let os_name = e.file_name();
            let shown = format!("{rel}{}", os_name.to_string_lossy());
            let Some(name) = os_name.to_str() else {
                skipped.push((shown, "the name is not UTF-8".into()));
                continue;
            };
            if validate_name(name).is_err() {
                skipped.push((shown, "the store cannot hold this name".into()));
                continue;
            }
            let path = e.path();
            let m = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(err) => {
                    skipped.push((shown, err.to_string()));
                    continue;
                }
            };
            let child = format!("{rel}{name}");
            if m.is_dir() {
                dirs.insert(child.clone(), (m.mode() & 0o7777, mtime_of(&m)));
                subdirs.push((path, format!("{child}/")));
            } else if m.is_file() {
                found.push(Found {
                    rel: child,
                    size: m.len(),
                    mtime: mtime_of(&m),
                    mode: m.mode() & 0o7777,
                });
            } else if m.file_type().is_symlink() {
                skipped.push((child, "symbolic link (not followed)".into()));
            } else {
                skipped.push((child, "not a regular file".into()));
            }
        }
        // Depth first, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(Scan {
        files: found,
        dirs,
        skipped,
    })
}

/// The store path of a new file of kind `kind` at `rel` in the source.
pub fn dest_of(kind: Kind, into: &str, rel: &str) -> String {
    format!("{}/{}/{}", kind.folder(), into.trim_matches('/'), rel)
}

/// `NAME (n).EXT` for the n-th name tried when `name` is taken.
pub fn suffixed(name: &str, n: u32) -> String {
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{} ({n}){}", &name[..dot], &name[dot..]),
        _ => format!("{name} ({n})"),
    }
}

/// State shared by the workers of one run.
struct Run<'a> {
    remote: &'a Remote,
    root: NodeId,
    opts: &'a Options<'a>,
    index: Mutex<Index>,
    dirs: Mutex<HashMap<String, NodeId>>,
    /// The source's folders: their modes and mtimes go to the folders made for them.
    src_dirs: HashMap<String, (u32, Timestamp)>,
    /// Folders this run made for source folders: (node, mode, mtime) to set at the end
    /// (after their last file went in).
    made: Mutex<Vec<(NodeId, u32, Timestamp)>>,
    report: Mutex<Report>,
    files_done: AtomicU64,
    bytes_done: AtomicU64,
    /// Set when the server became unreachable: the run stops, the index is kept.
    broken: AtomicBool,
    /// Changes made to the index (it is saved only when this moved).
    changes: AtomicU64,
}

enum Outcome {
    Unchanged,
    Touched,
    New { dest: String, renamed: bool },
    AlreadyThere,
    Modified { dest: String },
    Conflict { dest: String },
}

/// Runs an import or backup of `opts.src` with the index at `index_path`.
pub fn run(
    remote: &Remote,
    root: NodeId,
    opts: &Options<'_>,
    index_path: &Path,
) -> Result<Report, IngestError> {
    let started = Instant::now();
    let sent_before = remote.traffic.totals().0;
    validate_into(opts.into)?;
    let Scan {
        files: found,
        dirs: src_dirs,
        skipped,
    } = scan(opts.src)?;
    (opts.scanned)(found.len() as u64, found.iter().map(|f| f.size).sum());
    let index = Index::load(index_path).map_err(io(index_path))?;
    let run = Run {
        remote,
        root,
        opts,
        index: Mutex::new(index),
        dirs: Mutex::new(HashMap::new()),
        src_dirs,
        made: Mutex::new(Vec::new()),
        report: Mutex::new(Report {
            files: found.len() as u64,
            bytes: found.iter().map(|f| f.size).sum(),
            skipped,
            ..Report::default()
        }),
        files_done: AtomicU64::new(0),
        bytes_done: AtomicU64::new(0),
        broken: AtomicBool::new(false),
        // Files gone from the source are dropped from the index below.
        changes: AtomicU64::new(1),
    };
    // Files gone from the source since the last run: reported, kept in the store.
    {
        let present: std::collections::HashSet<&str> =
            found.iter().map(|f| f.rel.as_str()).collect();
        let mut index = lock(&run.index);
        let gone: Vec<String> = index
            .files
            .keys()
            .filter(|k| !present.contains(k.as_str()))
            .cloned()
            .collect();
        let mut report = lock(&run.report);
        for rel in gone {
            if let Some(s) = if opts.dry_run {
                index.files.get(&rel).cloned()
            } else {
                index.files.remove(&rel)
            } {
                report.deleted.push((rel, s.dest));
            }
        }
    }
    let next = AtomicUsize::new(0);
    // (when, how long until the next, the change count saved): the index is written only
    // when it changed, and a large one (slow to write) less often.
    let last_save = Mutex::new((Instant::now(), SAVE_EVERY, 0u64));
    let save = |force: bool| -> Result<(), IngestError> {
        if opts.dry_run {
            return Ok(());
        }
        let mut last = lock(&last_save);
        let changes = run.changes.load(Ordering::Relaxed);
        if changes != last.2 && (force || last.0.elapsed() >= last.1) {
            let started = Instant::now();
            lock(&run.index).save(index_path).map_err(io(index_path))?;
            *last = (
                Instant::now(),
                SAVE_EVERY.max(started.elapsed() * 20),
                changes,
            );
        }
        Ok(())
    };
    let save_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..WORKERS.min(found.len().max(1)) {
            s.spawn(|| loop {
                if run.broken.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(f) = found.get(i) else { return };
                let outcome = run.one(f);
                run.note(f, outcome);
                if let Err(e) = save(false) {
                    *lock(&save_error) = Some(e);
                    run.broken.store(true, Ordering::Relaxed);
                }
            });
        }
    });
    save(true)?;
    if let Some(e) = lock(&save_error).take() {
        return Err(e);
    }
    if !run.broken.load(Ordering::Relaxed) {
        // Folders made for source folders get their modes and mtimes last.
        for (node, mode, mtime) in std::mem::take(&mut *lock(&run.made)) {
            run.attr(
                "setattr",
                Request::SetAttr {
                    node,
                    mode: Some(mode),
                    uid: None,
                    gid: None,
                    atime: None,
                    mtime: Some(mtime),
                },
            )?;
        }
    }
    let mut report = run.report.into_inner().unwrap_or_else(|p| p.into_inner());
    report.bytes_sent = remote.traffic.totals().0.saturating_sub(sent_before);
    report.elapsed = started.elapsed();
    if run.broken.load(Ordering::Relaxed) {
        let why = report
            .failed
            .last()
            .map(|(_, e)| e.clone())
            .unwrap_or_default();
        return Err(IngestError::Invalid(format!(
            "stopped after {} of {} files: {why}; run it again to continue where it stopped",
            run.files_done.load(Ordering::Relaxed),
            report.files
        )));
    }
    Ok(report)
}

/// `work`, `personal/Trip`: an area, then any sub-categories.
pub fn validate_into(into: &str) -> Result<(), IngestError> {
    let mut parts = into.trim_matches('/').split('/');
    let area = parts.next().unwrap_or_default();
    if !shelf_protocol::category::AREAS.contains(&area) {
        return Err(IngestError::Invalid(format!(
            "--into takes personal, work or projects (optionally with sub-categories, like work/WebProject), not {into:?}"
        )));
    }
    for p in parts {
        validate_name(p).map_err(|_| {
            IngestError::Invalid(format!("--into {into:?}: {p:?} cannot be a folder name"))
        })?;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock_or_recover()
}

impl Run<'_> {
    fn note(&self, f: &Found, outcome: Result<Outcome, IngestError>) {
        let mut r = lock(&self.report);
        match outcome {
            Ok(Outcome::Unchanged | Outcome::Touched) => r.unchanged += 1,
            Ok(Outcome::AlreadyThere) => r.already_there += 1,
            Ok(Outcome::New { dest, renamed }) => {
                if renamed {
                    r.renamed.push((f.rel.clone(), dest.clone()));
                }
                r.new.push((f.rel.clone(), dest));
            }
            Ok(Outcome::Modified { dest }) => r.modified.push((f.rel.clone(), dest)),
            Ok(Outcome::Conflict { dest }) => r.conflicts.push((f.rel.clone(), dest)),
            Err(e) => {
                if let IngestError::Remote(re) = &e {
                    // The server is gone, or refuses every file alike: stop, keep the index.
                    let whole_run = matches!(
                        re.code(),
                        None | Some(
                            ErrorCode::ReadOnly
                                | ErrorCode::PermissionDenied
                                | ErrorCode::QuotaExceeded
                                | ErrorCode::NoSpace
                                | ErrorCode::AuthRequired
                                | ErrorCode::SessionExpired
                        )
                    );
                    if whole_run || re.is_transient() {
                        self.broken.store(true, Ordering::Relaxed);
                    }
                }
                r.failed.push((f.rel.clone(), e.to_string()));
            }
        }
        drop(r);
        let files = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = self.bytes_done.fetch_add(f.size, Ordering::Relaxed) + f.size;
        (self.opts.progress)(files, bytes);
    }

    /// A request answering a node's attributes (see [`Remote::ask_attr`]).
    fn attr(&self, what: &'static str, req: Request) -> Result<Attr, IngestError> {
        Ok(self.remote.ask_attr(what, req)?)
    }

    /// Handles one source file.
    fn one(&self, f: &Found) -> Result<Outcome, IngestError> {
        let known = lock(&self.index).files.get(&f.rel).cloned();
        if let Some(sent) = &known {
            if sent.size == f.size && sent.mtime == f.mtime {
                return Ok(Outcome::Unchanged);
            }
        }
        let path = self.opts.src.join(&f.rel);
        let file = std::fs::File::open(&path).map_err(io(&path))?;
        let header = classify::read_header(&file).map_err(io(&path))?;
        let kind = classify::classify(&header, &f.rel);
        if self.opts.dry_run {
            let dest = known
                .as_ref()
                .map_or_else(|| dest_of(kind, self.opts.into, &f.rel), |s| s.dest.clone());
            let mut r = lock(&self.report);
            let e = r.per_kind.entry(kind.folder()).or_default();
            e.0 += 1;
            e.1 += f.size;
            return Ok(match known {
                Some(_) => Outcome::Modified { dest },
                None => Outcome::New {
                    dest,
                    renamed: false,
                },
            });
        }
        match known {
            Some(sent) => self.update(f, &path, file, sent),
            None => self.create(f, &path, file, kind),
        }
    }

    /// Reads a file's content as a chunk list; small files keep their chunks for the
    /// commit, larger ones are sent to `node` as they are read.
    fn read_content(
        &self,
        f: &Found,
        path: &Path,
        file: std::fs::File,
        node: Option<NodeId>,
    ) -> Result<(Vec<ChunkRef>, Vec<shelf_protocol::ChunkBody>), IngestError> {
        lock(&self.report).bytes_read += f.size;
        match node {
            Some(node) if f.size > transfer::INLINE_MAX => Ok((
                transfer::send_chunks(
                    self.remote,
                    node,
                    std::io::BufReader::with_capacity(1 << 20, file),
                    &Default::default(),
                )?,
                Vec::new(),
            )),
            _ => transfer::inline_chunks(file).map_err(io(path)),
        }
    }

    /// A file sent before whose size or mtime changed.
    fn update(
        &self,
        f: &Found,
        path: &Path,
        file: std::fs::File,
        sent: Sent,
    ) -> Result<Outcome, IngestError> {
        match self.attr("getattr", Request::GetAttr { node: sent.node }) {
            Ok(_) => {}
            Err(IngestError::Remote(e)) if e.code() == Some(ErrorCode::NotFound) => {
                // Deleted from the store: sent again as a new file.
                lock(&self.index).files.remove(&f.rel);
                self.changes.fetch_add(1, Ordering::Relaxed);
                let header = classify::read_header(&file).map_err(io(path))?;
                let kind = classify::classify(&header, &f.rel);
                return self.create(f, path, file, kind);
            }
            Err(e) => return Err(e),
        };
        let (chunks, inline) = self.read_content(f, path, file, Some(sent.node))?;
        let hash = content_hash(&chunks);
        if hash == sent.hash {
            // Same content, new mtime: only the mtime moves.
            self.attr(
                "setattr",
                Request::SetAttr {
                    node: sent.node,
                    mode: None,
                    uid: None,
                    gid: None,
                    atime: None,
                    mtime: Some(f.mtime),
                },
            )?;
            self.remember(f, sent.dest, (sent.node, sent.version), hash);
            return Ok(Outcome::Touched);
        }
        let resp = self.remote.commit(Request::Commit {
            node: sent.node,
            base_version: sent.version,
            chunks,
            inline,
            mtime: f.mtime,
            durable: false,
        })?;
        match resp {
            Committed::Made(a) => {
                self.remember(f, sent.dest.clone(), (sent.node, a.version), hash);
                Ok(Outcome::Modified { dest: sent.dest })
            }
            Committed::KeptElsewhere { attr, name } => {
                let dest = match sent.dest.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{name}"),
                    None => name,
                };
                self.remember(f, dest.clone(), (attr.node, attr.version), hash);
                Ok(Outcome::Conflict { dest })
            }
        }
    }

    fn remember(&self, f: &Found, dest: String, (node, version): (NodeId, u64), hash: [u8; 32]) {
        self.changes.fetch_add(1, Ordering::Relaxed);
        lock(&self.index).files.insert(
            f.rel.clone(),
            Sent {
                dest,
                node,
                version,
                size: f.size,
                mtime: f.mtime,
                hash,
            },
        );
    }

    /// A file not sent before: created in its category folder under a free name.
    fn create(
        &self,
        f: &Found,
        path: &Path,
        file: std::fs::File,
        kind: Kind,
    ) -> Result<Outcome, IngestError> {
        let dest = dest_of(kind, self.opts.into, &f.rel);
        let (dir_path, name) = dest.rsplit_once('/').unwrap_or(("", &dest));
        let dir = self.ensure_dir(dir_path)?;
        // Small files are read first: their content decides whether a taken name holds
        // the same file already. Larger ones are compared only when sizes match.
        let mut content = if f.size <= transfer::INLINE_MAX {
            Some(self.read_content(f, path, file, None)?)
        } else {
            drop(file);
            None
        };
        for n in 1..1000u32 {
            let candidate = if n == 1 {
                name.to_string()
            } else {
                suffixed(name, n)
            };
            let store_path = format!("{dir_path}/{candidate}");
            let created = self.attr(
                "create",
                Request::Create {
                    parent: dir,
                    name: candidate.clone(),
                    mode: f.mode,
                    exclusive: true,
                    id: None,
                },
            );
            let attr = match created {
                Ok(a) => a,
                Err(IngestError::Remote(e)) if e.code() == Some(ErrorCode::Exists) => {
                    let existing = self.remote.lookup(dir, &candidate)?;
                    if existing.kind != NodeKind::File {
                        continue;
                    }
                    if existing.version == 0 && existing.size == 0 {
                        // Created by a run that stopped before sending: ours to fill.
                        existing
                    } else if existing.size == f.size {
                        let chunks = match &content {
                            Some((c, _)) => c.clone(),
                            None => {
                                let file = std::fs::File::open(path).map_err(io(path))?;
                                lock(&self.report).bytes_read += f.size;
                                let mut refs = Vec::new();
                                crate::chunker::chunk_stream(
                                    std::io::BufReader::with_capacity(1 << 20, file),
                                    |r, _| {
                                        refs.push(r);
                                        Ok(())
                                    },
                                )
                                .map_err(io(path))?;
                                refs
                            }
                        };
                        let theirs = self.remote.get_manifest(existing.node)?.chunks;
                        if content_hash(&theirs) == content_hash(&chunks) {
                            let id = (existing.node, existing.version);
                            self.remember(f, store_path, id, content_hash(&chunks));
                            return Ok(Outcome::AlreadyThere);
                        }
                        continue;
                    } else {
                        continue;
                    }
                }
                Err(e) => return Err(e),
            };
            let (chunks, inline) = match content.take() {
                Some(c) => c,
                None => {
                    let file = std::fs::File::open(path).map_err(io(path))?;
                    self.read_content(f, path, file, Some(attr.node))?
                }
            };
            let hash = content_hash(&chunks);
            let committed = self.attr(
                "commit",
                Request::Commit {
                    node: attr.node,
                    base_version: attr.version,
                    chunks,
                    inline,
                    mtime: f.mtime,
                    durable: false,
                },
            )?;
            if attr.mode != f.mode {
                // An adopted placeholder keeps the source's mode too.
                self.attr(
                    "setattr",
                    Request::SetAttr {
                        node: committed.node,
                        mode: Some(f.mode),
                        uid: None,
                        gid: None,
                        atime: None,
                        mtime: None,
                    },
                )?;
            }
            self.remember(
                f,
                store_path.clone(),
                (committed.node, committed.version),
                hash,
            );
            return Ok(Outcome::New {
                dest: store_path,
                renamed: n > 1,
            });
        }
        Err(IngestError::Invalid(format!(
            "{dest}: no free name (tried 999 suffixes)"
        )))
    }

    /// The folder at store path `path` (`KIND/INTO/REL`), created (with its parents) when
    /// missing; folders standing for source folders are noted to get their modes and mtimes.
    fn ensure_dir(&self, path: &str) -> Result<NodeId, IngestError> {
        if let Some(&id) = lock(&self.dirs).get(path) {
            return Ok(id);
        }
        // Components before the source's own folders: the kind and the destination.
        let prefix = 1 + self.opts.into.split('/').filter(|p| !p.is_empty()).count();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut at = self.root;
        let mut so_far = String::new();
        for (i, &part) in parts.iter().enumerate() {
            let source = (i >= prefix)
                .then(|| self.src_dirs.get(&parts[prefix..=i].join("/")))
                .flatten();
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(part);
            if let Some(&id) = lock(&self.dirs).get(&so_far) {
                at = id;
                continue;
            }
            let lookup = self.remote.lookup(at, part).map_err(IngestError::from);
            let attr = match lookup {
                Ok(a) => a,
                Err(IngestError::Remote(e)) if e.code() == Some(ErrorCode::NotFound) => {
                    match self.attr(
                        "mkdir",
                        Request::Mkdir {
                            parent: at,
                            name: part.to_string(),
                            // Writable until the run ends, whatever the source's mode.
                            mode: source.map_or(0o755, |(m, _)| m | 0o700),
                            id: None,
                        },
                    ) {
                        Ok(attr) => {
                            if let Some(&(mode, mtime)) = source {
                                lock(&self.made).push((attr.node, mode, mtime));
                            }
                            attr
                        }
                        // Another worker made it meanwhile.
                        Err(IngestError::Remote(e)) if e.code() == Some(ErrorCode::Exists) => {
                            self.remote.lookup(at, part)?
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            if attr.kind != NodeKind::Dir {
                return Err(IngestError::Invalid(format!(
                    "{so_far} is a file in the store, so nothing can go into it"
                )));
            }
            lock(&self.dirs).insert(so_far.clone(), attr.node);
            at = attr.node;
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_destinations() {
        assert_eq!(suffixed("a.jpg", 2), "a (2).jpg");
        assert_eq!(suffixed("README", 3), "README (3)");
        assert_eq!(suffixed(".bashrc", 2), ".bashrc (2)");
        assert_eq!(suffixed("x.tar.gz", 2), "x.tar (2).gz");
        assert_eq!(
            dest_of(Kind::Photo, "work", "WebProject/a.jpg"),
            "photos/work/WebProject/a.jpg"
        );
        assert!(validate_into("work").is_ok());
        assert!(validate_into("personal/Trip 2026").is_ok());
        assert!(validate_into("holidays").is_err());
        assert!(validate_into("work/../x").is_err());
    }

    #[test]
    fn scan_lists_files_and_skips_what_the_store_cannot_hold() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("b/c")).unwrap();
        std::fs::write(d.path().join("a.txt"), b"1").unwrap();
        std::fs::write(d.path().join("b/c/d.jpg"), b"22").unwrap();
        std::os::unix::fs::symlink("a.txt", d.path().join("link")).unwrap();
        let scan = scan(d.path()).unwrap();
        let rels: Vec<_> = scan
            .files
            .iter()
            .map(|f| (f.rel.as_str(), f.size))
            .collect();
        assert_eq!(rels, [("a.txt", 1), ("b/c/d.jpg", 2)]);
        assert_eq!(scan.skipped.len(), 1);
        assert_eq!(scan.skipped[0].0, "link");
        let mut dirs: Vec<_> = scan.dirs.keys().cloned().collect();
        dirs.sort();
        assert_eq!(dirs, ["b", "b/c"]);
    }
}
