//! The embedded engine: sled trees as they are, plus an id floor so that ids drawn after a
//! copy from another database never repeat one of its ids.

use super::{
    ConflictableTransactionError, KvError, Result, TransactionError, TransactionResult, Tree,
    TxResult, TxTree,
};

/// Key, in sled's default tree, of the number added to every id sled draws.
const ID_FLOOR: &[u8] = b"shelf.id_floor";

fn id_floor(db: &sled::Db) -> Result<u64> {
    Ok(db
        .get(ID_FLOOR)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

pub(super) fn generate_id(db: &sled::Db) -> Result<u64> {
    Ok(db.generate_id()? + id_floor(db)?)
}

pub(super) fn raise_ids(db: &sled::Db, floor: u64) -> Result<()> {
    if generate_id(db)? > floor {
        return Ok(());
    }
    db.insert(ID_FLOOR, &(id_floor(db)? + floor + 1).to_be_bytes())?;
    db.flush()?;
    Ok(())
}

/// sled cannot say its last id without drawing one: a drawn one is an upper bound.
pub(super) fn last_id(db: &sled::Db) -> Result<u64> {
    generate_id(db)
}

pub(super) fn tree_names(db: &sled::Db) -> Result<Vec<String>> {
    Ok(db
        .tree_names()
        .into_iter()
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        // sled's own default tree holds only the id floor.
        .filter(|n| n != "__sled__default")
        .collect())
}

pub(super) fn transaction<const N: usize, T, E>(
    trees: [&Tree; N],
    f: impl Fn(&[TxTree; N]) -> TxResult<T, E>,
) -> TransactionResult<T, E> {
    use sled::transaction::ConflictableTransactionError as SledConflict;
    use sled::Transactional;
    let sled_trees: Vec<&sled::Tree> = trees
        .iter()
        .map(|t| match t {
            Tree::Sled(t) => Ok(t),
            Tree::Pg(_) => Err(KvError::PgSetup(
                "a transaction mixes sled and PostgreSQL trees".into(),
            )),
        })
        .collect::<Result<_>>()
        .map_err(TransactionError::Storage)?;
    let outcome = sled_trees.as_slice().transaction(|view| {
        let mut txs = view.iter().cloned().map(TxTree::Sled);
        let txs: [TxTree; N] = std::array::from_fn(|_| txs.next().expect("one view per tree"));
        f(&txs).map_err(|e| match e {
            ConflictableTransactionError::Abort(e) => SledConflict::Abort(e),
            ConflictableTransactionError::Conflict => SledConflict::Conflict,
            ConflictableTransactionError::Storage(KvError::Sled(e)) => SledConflict::Storage(e),
            ConflictableTransactionError::Storage(other) => SledConflict::Storage(
                sled::Error::Unsupported(format!("not a sled error: {other}")),
            ),
        })
    });
    outcome.map_err(|e| match e {
        sled::transaction::TransactionError::Abort(e) => TransactionError::Abort(e),
        sled::transaction::TransactionError::Storage(e) => TransactionError::Storage(e.into()),
    })
}
