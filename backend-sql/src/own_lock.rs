//! SQLite: telling a publish that waits for this very process's write lock from one that waits for another
//! process's. A transaction of the application's on the bus file (another connection of this process) that has
//! written holds the file's one write lock; a publish through the bus inside it waits for that lock while the
//! transaction waits for the publish, until `sqlite.busy_timeout`, and every other process's writes wait meanwhile.
//!
//! In WAL mode the write lock is a POSIX record lock on byte 120 of the `-shm` file (SQLite's `WAL_WRITE_LOCK`),
//! taken by the process. Linux lists every record lock with its process in `/proc/locks`; reading it opens nothing
//! (opening and closing the `-shm` file here would drop the process's SQLite locks on it: POSIX locks belong to the
//! process and go with any close of the file). Elsewhere nothing is detected and SQLite's "database is locked" stands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tidings_core::{Error, ErrorKind};

/// Byte of the `-shm` file whose write lock is SQLite's WAL write lock (`UNIX_SHM_BASE + WAL_WRITE_LOCK`).
const WAL_WRITE_LOCK_BYTE: u64 = 120;

/// Per database file, the transactions of SQLite buses in this process that hold its write lock (`BEGIN IMMEDIATE`
/// took it): while one is open, the lock this process holds may be a bus's own (a large batch), so a wait for it is
/// not diagnosed.
static BUS_WRITES: Mutex<BTreeMap<PathBuf, usize>> = Mutex::new(BTreeMap::new());

/// Counts a bus transaction of this process holding the write lock of a file, while it lives.
pub(crate) struct BusWrite<'a>(&'a Path);

impl Drop for BusWrite<'_> {
    fn drop(&mut self) {
        let mut writes = BUS_WRITES.lock().unwrap();
        if let Some(n) = writes.get_mut(self.0) {
            *n -= 1;
            if *n == 0 {
                writes.remove(self.0);
            }
        }
    }
}

/// The database file of a SQLite store and its busy timeout.
#[derive(Debug, Clone)]
pub(crate) struct OwnLock {
    /// The file as configured, for messages.
    pub path: PathBuf,
    /// The file's canonical path: the key of its count in [`BUS_WRITES`].
    pub key: PathBuf,
    pub busy_timeout: Duration,
}

impl OwnLock {
    pub(crate) fn new(path: &Path, busy_timeout: Duration) -> Self {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        OwnLock { path: path.to_path_buf(), key, busy_timeout }
    }

    /// Counts a bus transaction that took the write lock, until the guard is dropped.
    pub(crate) fn bus_write(&self) -> BusWrite<'_> {
        *BUS_WRITES.lock().unwrap().entry(self.key.clone()).or_default() += 1;
        BusWrite(&self.key)
    }

    /// The clear error for `e` when it is SQLite's "database is locked" and the lock is this process's own, held
    /// by none of the buses' transactions; `None` otherwise.
    pub(crate) fn explain(&self, topic: &str, e: &sqlx::Error) -> Option<Error> {
        if !is_busy(e) || BUS_WRITES.lock().unwrap().contains_key(&self.key) || !held_by_this_process(&self.path) {
            return None;
        }
        Some(Error::new(
            ErrorKind::Unsupported,
            format!(
                "sql: publishing to topic {topic:?} waited out sqlite.busy_timeout ({:?}) for the write lock of {}, \
                 which this process holds itself: a transaction of this process on that file (another connection, \
                 such as the application's `pool.begin()`) has written and is still open, and a publish through the \
                 bus cannot commit before it ends while the transaction waits for the publish (other processes' \
                 writes wait meanwhile). Publish inside that transaction with `tidings::sql::publish_in(&bus, &mut \
                 *tx, &TOPIC, &message)`, or through the bus after it commits",
                self.busy_timeout,
                self.path.display()
            ),
        ))
    }
}

/// SQLite's SQLITE_BUSY (5), with or without an extended code.
fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().and_then(|c| c.parse::<i64>().ok()).is_some_and(|c| c & 0xff == 5),
        _ => false,
    }
}

/// Whether this process holds the WAL write lock of the SQLite database `path`.
#[cfg(target_os = "linux")]
pub(crate) fn held_by_this_process(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    let (Ok(meta), Ok(locks)) = (std::fs::metadata(&shm), std::fs::read_to_string("/proc/locks")) else {
        return false;
    };
    // st_dev as the kernel encodes it (glibc's major() and minor()).
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let file = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let pid = std::process::id().to_string();
    locks.lines().any(|line| {
        // "1: POSIX  ADVISORY  WRITE 4242 fe:00:1234 120 120"; a waiter's line has "->" after the number.
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, "POSIX", _, "WRITE", p, id, start, end] = f[..] else { return false };
        let covers = start.parse::<u64>().is_ok_and(|s| s <= WAL_WRITE_LOCK_BYTE)
            && (end == "EOF" || end.parse::<u64>().is_ok_and(|e| e >= WAL_WRITE_LOCK_BYTE));
        p == pid && id == file && covers
    })
}

/// Whether this process holds the WAL write lock of the SQLite database `path`: not known off Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn held_by_this_process(_path: &Path) -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use sqlx::{Connection, SqliteConnection};

    #[tokio::test]
    async fn a_write_transaction_of_this_process_holds_the_wal_write_lock_until_it_ends() {
        let dir = std::env::temp_dir().join(format!("tidings-own-lock-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bus.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut conn = SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut conn).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(&mut conn).await.unwrap();
        assert!(!super::held_by_this_process(&path), "no transaction yet");
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)").execute(&mut *tx).await.unwrap();
        assert!(super::held_by_this_process(&path), "a written, open transaction holds it");
        tx.rollback().await.unwrap();
        assert!(!super::held_by_this_process(&path), "released at the end of the transaction");
        drop(conn);
        let _ = std::fs::remove_dir_all(dir);
    }
}
