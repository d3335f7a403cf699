//! SQLite: the counters job ([`crate::store::CounterStore`]). One SQLite
//! file serves one process, so the credential-failure counters and
//! rate-limit windows stay in that process's memory (the trait's defaults
//! say so); writing them to the file would cost a write per login.

use super::SqliteStore;
use crate::store::CounterStore;

impl CounterStore for SqliteStore {}
