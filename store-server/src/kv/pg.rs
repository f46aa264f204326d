//! The PostgreSQL engine: one table per tree (`kv_NAME`: `key bytea PRIMARY KEY, value
//! bytea`), bytewise key order (PostgreSQL compares `bytea` as bytes), transactions at
//! SERIALIZABLE retried on serialization failures and deadlocks.
//!
//! A transaction reads through to the database and keeps its writes in memory until the
//! closure returns, then writes them with one statement per tree and kind (upsert, delete)
//! and commits: a batch of 1,000 creates costs its reads plus a dozen statements.
//!
//! Durability follows sled's: commits are asynchronous (`synchronous_commit = off`, so a
//! crash of PostgreSQL itself may lose the last fraction of a second), and [`PgKv::flush`]
//! waits until everything committed before it is on PostgreSQL's disk. A crash of a Shelf
//! server loses nothing committed.
//!
//! Connections come from a small pool; the connection tasks run on a runtime of their own,
//! and callers block on their queries (the store's calls are blocking calls), so this
//! works the same from a server's blocking threads and from a command-line tool.

use super::{
    Batch, CompareAndSwapError, ConflictableTransactionError, IVec, KvError, Result,
    TransactionError, TransactionResult, Tree, TxResult, TxTree, UnabortableTransactionError,
};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

/// Most connections one server opens.
const MAX_CONNECTIONS: usize = 16;
/// Ids drawn from the database at a time (the sequence steps by this much).
const ID_BLOCK: u64 = 1024;
/// Most attempts of a transaction that keeps meeting conflicts.
const MAX_ATTEMPTS: u32 = 1000;

/// Where the metadata database is: a libpq-style connection string
/// (`host=127.0.0.1 port=5432 user=shelf dbname=shelf` or `postgresql://…`).
#[derive(Clone, serde::Deserialize)]
pub struct PgConfig {
    pub url: String,
}

impl std::fmt::Debug for PgConfig {
    /// Names the server and database, never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.url.parse::<tokio_postgres::Config>() {
            Ok(c) => f
                .debug_struct("PgConfig")
                .field("hosts", &c.get_hosts())
                .field("ports", &c.get_ports())
                .field("dbname", &c.get_dbname())
                .field("user", &c.get_user())
                .finish(),
            Err(_) => f.write_str("PgConfig(unparsable)"),
        }
    }
}

impl PgConfig {
    /// `DATA/postgres.json` (`{"url": "…"}`), if there is one.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Option<PgConfig>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `SHELF_POSTGRES_URL`, if set.
    pub fn from_env() -> Option<PgConfig> {
        std::env::var("SHELF_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .map(|url| PgConfig { url })
    }
}

/// One connection and the statements it has prepared.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures_executor::block_on(f)
}

impl Conn {
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = block_on(self.client.prepare(sql))?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let s = self.statement(sql)?;
        Ok(block_on(self.client.query(&s, params))?)
    }

    fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let s = self.statement(sql)?;
        Ok(block_on(self.client.execute(&s, params))?)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(block_on(self.client.batch_execute(sql))?)
    }

    /// Writes `changes` (table → key → new value, `None` to remove) and commits, all in
    /// one round trip: the statements are sent back to back (tokio-postgres pipelines
    /// requests polled together), after `BEGIN` too if `begin`. Any failure fails it all
    /// (a statement that fails aborts the transaction, and the `COMMIT` behind it then
    /// only rolls back).
    fn write_and_commit(
        &mut self,
        begin: Option<&str>,
        changes: &Changes<'_>,
        notices: &[(String, String)],
    ) -> Result<()> {
        let mut plans: Vec<Plan<'_>> = Vec::new();
        for (table, changes) in changes {
            let (mut keys, mut values, mut gone) = (Vec::new(), Vec::new(), Vec::new());
            for (k, v) in *changes {
                match v {
                    Some(v) => {
                        keys.push(k.as_slice());
                        values.push(v.as_ref());
                    }
                    None => gone.push(k.as_slice()),
                }
            }
            if !keys.is_empty() {
                let st = self.statement(&format!(
                    "INSERT INTO {table} (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ))?;
                plans.push((st, keys, Some(values)));
            }
            if !gone.is_empty() {
                let st = self.statement(&format!("DELETE FROM {table} WHERE key = ANY($1)"))?;
                plans.push((st, gone, None));
            }
        }
        let notify = if notices.is_empty() {
            None
        } else {
            Some(self.statement("SELECT pg_notify($1, $2)")?)
        };
        let client = &self.client;
        let begun = async {
            match begin {
                Some(sql) => client.batch_execute(sql).await,
                None => Ok(()),
            }
        };
        let writes =
            futures_util::future::join_all(plans.iter().map(|(st, keys, values)| async move {
                match values {
                    Some(values) => client.execute(st, &[keys, values]).await,
                    None => client.execute(st, &[keys]).await,
                }
            }));
        // Notifications are delivered when (and only if) the transaction commits.
        let told = futures_util::future::join_all(notices.iter().map(|(channel, payload)| {
            let st = notify.clone();
            async move {
                match st {
                    Some(st) => client.execute(&st, &[channel, payload]).await.map(|_| ()),
                    None => Ok(()),
                }
            }
        }));
        let (begun, written, told, committed) = block_on(futures_util::future::join4(
            begun,
            writes,
            told,
            client.batch_execute("COMMIT"),
        ));
        begun?;
        for w in written {
            w?;
        }
        for t in told {
            t?;
        }
        committed?;
        Ok(())
    }
}

/// One write statement of a commit: the statement, its keys, and the values (an upsert)
/// or none (a delete).
type Plan<'a> = (Statement, Vec<&'a [u8]>, Option<Vec<&'a [u8]>>);

/// What a transaction has read and written, by (table, key).
type SeenMap = HashMap<(Arc<str>, Vec<u8>), Seen>;

/// A transaction's writes: table → key → new value (`None`: remove).
type Changes<'a> = BTreeMap<&'a str, &'a BTreeMap<Vec<u8>, Option<IVec>>>;

/// Whether PostgreSQL gave up on a transaction because of another one (try again).
fn is_conflict(e: &KvError) -> bool {
    matches!(e, KvError::Pg(e) if matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    ))
}

fn unabortable(e: KvError) -> UnabortableTransactionError {
    if is_conflict(&e) {
        UnabortableTransactionError::Conflict
    } else {
        UnabortableTransactionError::Storage(e)
    }
}

/// What a listener hears ([`PgKv::listen`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Listening (again): anything sent while it was not is lost.
    Listening,
    Message {
        channel: String,
        payload: String,
    },
}

/// A database-wide job lock ([`PgKv::try_job_lock`]); closing its connection releases it.
pub struct PgJobLock {
    kv: Arc<PgKv>,
    conn: Option<Conn>,
}

impl Drop for PgJobLock {
    fn drop(&mut self) {
        drop(self.conn.take());
        self.kv.forget_one();
    }
}

/// Connections not in use, and how many are open.
#[derive(Default)]
struct Pool {
    idle: Vec<Conn>,
    open: usize,
}

/// A PostgreSQL database holding a store's trees.
pub struct PgKv {
    config: tokio_postgres::Config,
    /// Drives the connections (taken out and shut down on drop).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Mutex<Pool>,
    freed: Condvar,
    /// Ids drawn and not yet handed out: `(next, end)`.
    ids: Mutex<(u64, u64)>,
    /// Trees known to have their table.
    tables: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for PgKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKv")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish()
    }
}

impl Drop for PgKv {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The table of tree `name` (names are the store's own, checked to be plain words).
fn table_of(name: &str) -> Result<String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(KvError::PgSetup(format!(
            "tree name {name:?} is not a plain word"
        )));
    }
    Ok(format!("kv_{name}"))
}

impl PgKv {
    /// Connects to the database and creates the id sequence if it is new.
    pub fn connect(config: &PgConfig) -> Result<Arc<PgKv>> {
        let parsed: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| KvError::PgSetup(format!("connection string: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shelf-pg")
            .enable_all()
            .build()
            .map_err(|e| KvError::PgSetup(format!("runtime: {e}")))?;
        let kv = Arc::new(PgKv {
            config: parsed,
            runtime: Some(runtime),
            pool: Mutex::default(),
            freed: Condvar::new(),
            ids: Mutex::new((0, 0)),
            tables: Mutex::default(),
        });
        kv.with_conn(|c| {
            c.batch(&format!(
                "CREATE SEQUENCE IF NOT EXISTS shelf_ids INCREMENT BY {ID_BLOCK} MINVALUE 1"
            ))
        })
        .or_else(|e| {
            // Two servers creating it at once: the other one won.
            if kv
                .with_conn(|c| c.query("SELECT 1 FROM shelf_ids", &[]))
                .is_ok()
            {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        Ok(kv)
    }

    fn connect_one(&self) -> Result<Conn> {
        let config = self.config.clone();
        let rt = self
            .runtime
            .as_ref()
            .ok_or_else(|| KvError::PgSetup("shut down".into()))?;
        let client = block_on(rt.spawn(async move {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "PostgreSQL connection ended");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        }))
        .map_err(|e| KvError::PgSetup(format!("connection task: {e}")))??;
        let mut conn = Conn {
            client,
            statements: HashMap::new(),
        };
        // Commits do not wait for the disk; flush() does (see the module docs).
        conn.batch("SET synchronous_commit TO off")?;
        Ok(conn)
    }

    fn checkout(&self) -> Result<Conn> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(c) = pool.idle.pop() {
                if !c.client.is_closed() {
                    return Ok(c);
                }
                pool.open -= 1;
                continue;
            }
            if pool.open < MAX_CONNECTIONS {
                pool.open += 1;
                drop(pool);
                return self.connect_one().inspect_err(|_| {
                    self.pool.lock().unwrap_or_else(|p| p.into_inner()).open -= 1;
                    self.freed.notify_one();
                });
            }
            pool = self.freed.wait(pool).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn give_back(&self, conn: Conn) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if conn.client.is_closed() {
            pool.open -= 1;
        } else {
            pool.idle.push(conn);
        }
        self.freed.notify_one();
    }

    /// A checked-out connection is gone for good.
    fn forget_one(&self) {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).open -= 1;
        self.freed.notify_one();
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let mut conn = self.checkout()?;
        let out = f(&mut conn);
        self.give_back(conn);
        out
    }

    pub fn open_tree(self: &Arc<Self>, name: &str) -> Result<PgTree> {
        let table = table_of(name)?;
        let known = self
            .tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&table);
        if !known {
            let create = format!(
                "CREATE TABLE IF NOT EXISTS {table} (key bytea PRIMARY KEY, value bytea NOT NULL)"
            );
            if let Err(e) = self.with_conn(|c| c.batch(&create)) {
                // Another server made it at the same moment.
                self.with_conn(|c| c.query(&format!("SELECT 1 FROM {table} LIMIT 1"), &[]))
                    .map_err(|_| e)?;
            }
            self.tables
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(table.clone());
        }
        Ok(PgTree {
            kv: self.clone(),
            name: name.into(),
            table: table.into(),
        })
    }

    pub(super) fn tree_names(&self) -> Result<Vec<String>> {
        let rows = self.with_conn(|c| {
            c.query(
                "SELECT tablename::text FROM pg_tables \
                 WHERE schemaname = current_schema() AND tablename LIKE 'kv\\_%' ORDER BY 1",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| r.get::<_, String>(0)["kv_".len()..].to_string())
            .collect())
    }

    pub(super) fn generate_id(&self) -> Result<u64> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.0 >= ids.1 {
            let rows = self.with_conn(|c| c.query("SELECT nextval('shelf_ids')", &[]))?;
            let start = rows
                .first()
                .map(|r| r.get::<_, i64>(0))
                .ok_or_else(|| KvError::PgSetup("nextval returned nothing".into()))?;
            *ids = (start as u64, start as u64 + ID_BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    pub(super) fn raise_ids(&self, floor: u64) -> Result<()> {
        let floor = i64::try_from(floor).map_err(|_| KvError::PgSetup("id too large".into()))?;
        self.with_conn(|c| {
            c.query(
                "SELECT setval('shelf_ids', GREATEST($1::bigint + 1, (SELECT last_value FROM shelf_ids)))",
                &[&floor],
            )
        })?;
        *self.ids.lock().unwrap_or_else(|p| p.into_inner()) = (0, 0);
        Ok(())
    }

    pub(super) fn last_id(&self) -> Result<u64> {
        let rows = self.with_conn(|c| c.query("SELECT last_value FROM shelf_ids", &[]))?;
        let last = rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0);
        Ok(last as u64 + ID_BLOCK)
    }

    /// Waits until every commit so far is on PostgreSQL's disk: a commit that waits for
    /// the disk waits for all the log written before it.
    pub(super) fn flush(&self) -> Result<()> {
        self.with_conn(|c| {
            c.batch("BEGIN; SET LOCAL synchronous_commit TO on; SELECT txid_current(); COMMIT")
        })
    }

    /// Sends `payload` on `channel` to every server listening on this database.
    pub(super) fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        self.with_conn(|c| c.query("SELECT pg_notify($1, $2)", &[&channel, &payload]))?;
        Ok(())
    }

    /// Listens on `channels` on a connection of its own, calling `on` for each notification
    /// and with [`Notice::Listening`] each time it (re)connects — notifications sent while
    /// it was away are lost, so a listener then catches up from the database. `on` runs on
    /// the driver's thread and must not block.
    pub(super) fn listen(&self, channels: &[&str], on: Box<dyn Fn(Notice) + Send + Sync>) {
        let Some(rt) = self.runtime.as_ref() else {
            return;
        };
        let config = self.config.clone();
        let sql: String = channels.iter().map(|c| format!("LISTEN {c};")).collect();
        rt.spawn(async move {
            let mut backoff = shelf_protocol::sync::Backoff::new(
                std::time::Duration::from_millis(100),
                std::time::Duration::from_secs(5),
            );
            loop {
                match config.connect(NoTls).await {
                    Ok((client, mut connection)) => {
                        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                        let driver = tokio::spawn(async move {
                            loop {
                                match futures_util::future::poll_fn(|cx| connection.poll_message(cx))
                                    .await
                                {
                                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                        let _ = tx.send(Notice::Message {
                                            channel: n.channel().to_string(),
                                            payload: n.payload().to_string(),
                                        });
                                    }
                                    Some(Ok(_)) => {}
                                    Some(Err(e)) => {
                                        tracing::warn!(error = %e, "PostgreSQL listener connection failed");
                                        return;
                                    }
                                    None => return,
                                }
                            }
                        });
                        match client.batch_execute(&sql).await {
                            Ok(()) => {
                                backoff.reset();
                                on(Notice::Listening);
                                while let Some(notice) = rx.recv().await {
                                    on(notice);
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot LISTEN on PostgreSQL"),
                        }
                        driver.abort();
                    }
                    Err(e) => tracing::warn!(error = %e, "PostgreSQL listener cannot connect"),
                }
                tokio::time::sleep(backoff.next_wait()).await;
            }
        });
    }

    /// Waits for the database-wide lock `name`, shared with other shared holders or
    /// alone, for at most `timeout` (`None`: as long as it takes). `None` if the time ran
    /// out. Held by a connection of its own until the guard is dropped (or the server dies).
    pub(super) fn lock(
        self: &Arc<Self>,
        name: &str,
        shared: bool,
        timeout: Option<std::time::Duration>,
    ) -> Result<Option<PgJobLock>> {
        let conn = self.connect_one()?;
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).open += 1;
        // Dropped on failure, which closes the connection and counts it out.
        let mut hold = PgJobLock {
            kv: self.clone(),
            conn: Some(conn),
        };
        let Some(conn) = hold.conn.as_mut() else {
            return Ok(None);
        };
        if let Some(t) = timeout {
            conn.batch(&format!("SET lock_timeout = {}", t.as_millis().max(1)))?;
        }
        let sql = match shared {
            true => "SELECT pg_advisory_lock_shared(hashtext($1))",
            false => "SELECT pg_advisory_lock(hashtext($1))",
        };
        match conn.query(sql, &[&name]) {
            Ok(_) => Ok(Some(hold)),
            Err(KvError::Pg(e)) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes the database-wide lock `name` if no other server holds it: held by a
    /// connection of its own until the guard is dropped (or the server dies).
    pub(super) fn try_job_lock(self: &Arc<Self>, name: &str) -> Result<Option<PgJobLock>> {
        let mut conn = self.connect_one()?;
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).open += 1;
        let got = conn
            .query("SELECT pg_try_advisory_lock(hashtext($1))", &[&name])
            .map(|rows| rows.first().is_some_and(|r| r.get::<_, bool>(0)));
        match got {
            Ok(true) => Ok(Some(PgJobLock {
                kv: self.clone(),
                conn: Some(conn),
            })),
            other => {
                drop(conn);
                self.forget_one();
                other.map(|_| None)
            }
        }
    }

    pub(super) fn size_on_disk(&self) -> Result<u64> {
        let rows =
            self.with_conn(|c| c.query("SELECT pg_database_size(current_database())", &[]))?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0) as u64)
    }

    pub(super) fn transaction<const N: usize, T, E>(
        &self,
        trees: [&Tree; N],
        f: impl Fn(&[TxTree; N]) -> TxResult<T, E>,
    ) -> TransactionResult<T, E> {
        let tables: Vec<Arc<str>> = trees
            .iter()
            .map(|t| match t {
                Tree::Pg(t) => Ok(t.table.clone()),
                Tree::Sled(_) => Err(KvError::PgSetup(
                    "a transaction mixes sled and PostgreSQL trees".into(),
                )),
            })
            .collect::<Result<_>>()
            .map_err(TransactionError::Storage)?;
        let mut conn = self.checkout().map_err(TransactionError::Storage)?;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let state = Rc::new(TxState {
                conn: RefCell::new(Some(conn)),
                seen: RefCell::default(),
                notices: RefCell::default(),
                begun: Cell::new(false),
            });
            let views: [TxTree; N] = std::array::from_fn(|i| {
                TxTree::Pg(PgTxTree {
                    state: state.clone(),
                    table: tables[i].clone(),
                })
            });
            let result = f(&views);
            drop(views);
            let seen = state.seen.take();
            let notices = state.notices.take();
            let begun = state.begun.get();
            let kept = state.conn.borrow_mut().take();
            let Some(kept) = kept else {
                // Cannot happen (the state gives its connection back only here).
                self.forget_one();
                return Err(TransactionError::Storage(KvError::PgSetup(
                    "a transaction lost its connection".into(),
                )));
            };
            conn = kept;
            let failed = match result {
                Ok(value) => match commit(&mut conn, begun, &seen, &notices) {
                    Ok(()) => break Ok(value),
                    Err(e) => Some(e),
                },
                Err(ConflictableTransactionError::Abort(e)) => {
                    if begun {
                        let _ = conn.batch("ROLLBACK");
                    }
                    break Err(TransactionError::Abort(e));
                }
                Err(ConflictableTransactionError::Conflict) => None,
                Err(ConflictableTransactionError::Storage(e)) => Some(e),
            };
            // Ends whatever is left of the transaction (a no-op warning if none is).
            let _ = conn.batch("ROLLBACK");
            match failed {
                Some(e) if !is_conflict(&e) => break Err(TransactionError::Storage(e)),
                _ if attempt >= MAX_ATTEMPTS => {
                    break Err(TransactionError::Storage(KvError::PgSetup(format!(
                        "a transaction met a conflict {attempt} times in a row"
                    ))))
                }
                _ => {
                    // Let the other transaction finish before trying again.
                    let wait = 100 * u64::from(attempt.min(50));
                    std::thread::sleep(std::time::Duration::from_micros(wait));
                }
            }
        };
        self.give_back(conn);
        outcome
    }
}

const BEGIN: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";

/// Writes a transaction's changes and commits (beginning it first if nothing was read).
fn commit(
    conn: &mut Conn,
    begun: bool,
    seen: &SeenMap,
    notices: &[(String, String)],
) -> Result<()> {
    let mut by_table: BTreeMap<&str, BTreeMap<Vec<u8>, Option<IVec>>> = BTreeMap::new();
    for ((table, key), s) in seen {
        if s.dirty {
            by_table
                .entry(table)
                .or_default()
                .insert(key.clone(), s.value.clone());
        }
    }
    if by_table.is_empty() && !begun && notices.is_empty() {
        return Ok(()); // it neither read nor wrote
    }
    let changes: Changes<'_> = by_table.iter().map(|(t, c)| (*t, c)).collect();
    conn.write_and_commit((!begun).then_some(BEGIN), &changes, notices)
}

/// What a transaction read or wrote of one key.
struct Seen {
    value: Option<IVec>,
    /// Written by the transaction (to be stored at commit).
    dirty: bool,
}

/// A running transaction: its connection and what it has read and written.
struct TxState {
    conn: RefCell<Option<Conn>>,
    seen: RefCell<SeenMap>,
    /// Notifications to send as it commits: (channel, payload).
    notices: RefCell<Vec<(String, String)>>,
    /// `BEGIN` was sent (with the first read).
    begun: Cell<bool>,
}

impl TxState {
    /// Reads one value, sending `BEGIN` along with the first read.
    fn read(&self, sql: &str, key: &[u8]) -> Result<Vec<Row>> {
        let mut conn = self.conn.borrow_mut();
        let Some(c) = conn.as_mut() else {
            return Err(KvError::PgSetup("the transaction has ended".into()));
        };
        let st = c.statement(sql)?;
        if self.begun.get() {
            return Ok(block_on(c.client.query(&st, &[&key]))?);
        }
        self.begun.set(true);
        let (begun, rows) = block_on(futures_util::future::join(
            c.client.batch_execute(BEGIN),
            c.client.query(&st, &[&key]),
        ));
        begun?;
        Ok(rows?)
    }
}

/// A tree inside a PostgreSQL transaction.
#[derive(Clone)]
pub struct PgTxTree {
    state: Rc<TxState>,
    table: Arc<str>,
}

impl PgTxTree {
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<IVec>, UnabortableTransactionError> {
        let id = (self.table.clone(), key.to_vec());
        if let Some(s) = self.state.seen.borrow().get(&id) {
            return Ok(s.value.clone());
        }
        let sql = format!("SELECT value FROM {} WHERE key = $1", self.table);
        let rows = self.state.read(&sql, key).map_err(unabortable)?;
        let value = rows.first().map(|r| IVec::from(r.get::<_, &[u8]>(0)));
        self.state.seen.borrow_mut().insert(
            id,
            Seen {
                value: value.clone(),
                dirty: false,
            },
        );
        Ok(value)
    }

    pub(super) fn notify(&self, channel: &str, payload: &str) {
        self.state
            .notices
            .borrow_mut()
            .push((channel.to_string(), payload.to_string()));
    }

    pub(super) fn put(&self, key: &[u8], value: Option<IVec>) {
        self.state.seen.borrow_mut().insert(
            (self.table.clone(), key.to_vec()),
            Seen { value, dirty: true },
        );
    }
}

/// A tree of a PostgreSQL database.
#[derive(Clone)]
pub struct PgTree {
    kv: Arc<PgKv>,
    name: Arc<str>,
    table: Arc<str>,
}

fn value_of(rows: &[Row]) -> Option<IVec> {
    rows.first().map(|r| IVec::from(r.get::<_, &[u8]>(0)))
}

impl PgTree {
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn get(&self, key: &[u8]) -> Result<Option<IVec>> {
        let sql = format!("SELECT value FROM {} WHERE key = $1", self.table);
        Ok(value_of(&self.kv.with_conn(|c| c.query(&sql, &[&key]))?))
    }

    pub(super) fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<IVec>> {
        let t = &self.table;
        let sql = format!(
            "WITH old AS (SELECT value FROM {t} WHERE key = $1), \
             up AS (INSERT INTO {t} (key, value) VALUES ($1, $2) \
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value) \
             SELECT value FROM old"
        );
        Ok(value_of(
            &self.kv.with_conn(|c| c.query(&sql, &[&key, &value]))?,
        ))
    }

    pub(super) fn remove(&self, key: &[u8]) -> Result<Option<IVec>> {
        let sql = format!("DELETE FROM {} WHERE key = $1 RETURNING value", self.table);
        Ok(value_of(&self.kv.with_conn(|c| c.query(&sql, &[&key]))?))
    }

    pub(super) fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<IVec>,
    ) -> Result<std::result::Result<(), CompareAndSwapError>> {
        let t = &self.table;
        let swapped = self.kv.with_conn(|c| {
            Ok(match (old, new.as_deref()) {
                (None, Some(new)) => c.execute(
                    &format!("INSERT INTO {t} (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING"),
                    &[&key, &new],
                )?,
                (Some(old), Some(new)) => c.execute(
                    &format!("UPDATE {t} SET value = $3 WHERE key = $1 AND value = $2"),
                    &[&key, &old, &new],
                )?,
                (Some(old), None) => c.execute(
                    &format!("DELETE FROM {t} WHERE key = $1 AND value = $2"),
                    &[&key, &old],
                )?,
                (None, None) => u64::from(
                    c.query(&format!("SELECT 1 FROM {t} WHERE key = $1"), &[&key])?
                        .is_empty(),
                ),
            })
        })?;
        if swapped == 1 {
            return Ok(Ok(()));
        }
        Ok(Err(CompareAndSwapError {
            current: self.get(key)?,
            proposed: new,
        }))
    }

    pub(super) fn apply_batch(&self, batch: Batch) -> Result<()> {
        let mut changes = BTreeMap::new();
        for (k, v) in batch.ops {
            changes.insert(k.to_vec(), v);
        }
        let one: Changes<'_> = [(&*self.table, &changes)].into_iter().collect();
        // The COMMIT behind the writes ends the transaction even when one failed.
        self.kv
            .with_conn(|c| c.write_and_commit(Some("BEGIN"), &one, &[]))
    }

    pub(super) fn len(&self) -> Result<usize> {
        let sql = format!("SELECT count(*) FROM {}", self.table);
        let rows = self.kv.with_conn(|c| c.query(&sql, &[]))?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0) as usize)
    }

    pub(super) fn flush(&self) -> Result<()> {
        self.kv.flush()
    }

    pub(super) fn scan(&self, (lo, hi): (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> PgIter {
        PgIter {
            tree: self.clone(),
            lo,
            hi,
            front: VecDeque::new(),
            back: VecDeque::new(),
            front_done: false,
            back_done: false,
            page: FIRST_PAGE,
            failed: false,
        }
    }
}

/// Rows fetched by a scan's first query (most scans stop early), doubling up to
/// [`LAST_PAGE`].
const FIRST_PAGE: i64 = 32;
const LAST_PAGE: i64 = 4096;

/// A range scan, fetched a page at a time from either end.
pub struct PgIter {
    tree: PgTree,
    /// What has not been handed out yet lies between these.
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    front: VecDeque<(IVec, IVec)>,
    back: VecDeque<(IVec, IVec)>,
    /// The last page from that end was short: nothing more lies beyond it.
    front_done: bool,
    back_done: bool,
    page: i64,
    failed: bool,
}

fn above(lo: &Bound<Vec<u8>>, key: &[u8]) -> bool {
    match lo {
        Bound::Included(b) => key >= b.as_slice(),
        Bound::Excluded(b) => key > b.as_slice(),
        Bound::Unbounded => true,
    }
}

fn below(hi: &Bound<Vec<u8>>, key: &[u8]) -> bool {
    match hi {
        Bound::Included(b) => key <= b.as_slice(),
        Bound::Excluded(b) => key < b.as_slice(),
        Bound::Unbounded => true,
    }
}

impl PgIter {
    fn fetch(&mut self, forward: bool) -> Result<Vec<(IVec, IVec)>> {
        let mut sql = format!("SELECT key, value FROM {}", self.tree.table);
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let mut conds = Vec::new();
        for (bound, incl, excl) in [(&self.lo, ">=", ">"), (&self.hi, "<=", "<")] {
            let (op, key) = match bound {
                Bound::Included(k) => (incl, k),
                Bound::Excluded(k) => (excl, k),
                Bound::Unbounded => continue,
            };
            params.push(key);
            conds.push(format!("key {op} ${}", params.len()));
        }
        if !conds.is_empty() {
            sql += " WHERE ";
            sql += &conds.join(" AND ");
        }
        sql += if forward {
            " ORDER BY key"
        } else {
            " ORDER BY key DESC"
        };
        params.push(&self.page);
        sql += &format!(" LIMIT ${}", params.len());
        let rows = self.tree.kv.with_conn(|c| c.query(&sql, &params))?;
        self.page = (self.page * 2).min(LAST_PAGE);
        Ok(rows
            .iter()
            .map(|r| {
                (
                    IVec::from(r.get::<_, &[u8]>(0)),
                    IVec::from(r.get::<_, &[u8]>(1)),
                )
            })
            .collect())
    }

    fn step(&mut self, forward: bool) -> Option<Result<(IVec, IVec)>> {
        if self.failed {
            return None;
        }
        let (buf, done) = if forward {
            (&self.front, self.front_done)
        } else {
            (&self.back, self.back_done)
        };
        if buf.is_empty() && !done {
            let asked = self.page;
            match self.fetch(forward) {
                Ok(rows) => {
                    let short = (rows.len() as i64) < asked;
                    if forward {
                        self.front = rows.into();
                        self.front_done = short;
                    } else {
                        self.back = rows.into();
                        self.back_done = short;
                    }
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        let item = if forward {
            self.front.pop_front()
        } else {
            self.back.pop_front()
        }?;
        // The other end may have handed it out already.
        if !above(&self.lo, &item.0) || !below(&self.hi, &item.0) {
            self.front.clear();
            self.back.clear();
            self.front_done = true;
            self.back_done = true;
            return None;
        }
        if forward {
            self.lo = Bound::Excluded(item.0.to_vec());
        } else {
            self.hi = Bound::Excluded(item.0.to_vec());
        }
        Some(Ok(item))
    }

    pub(super) fn next(&mut self) -> Option<Result<(IVec, IVec)>> {
        self.step(true)
    }

    pub(super) fn next_back(&mut self) -> Option<Result<(IVec, IVec)>> {
        self.step(false)
    }
}
