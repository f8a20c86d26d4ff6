//! The runtime hooks (`--cfg tokio_unstable` only): tokio calls them on
//! every task spawn and end, with the task's id and spawn location; they
//! feed the process-wide [`Registry`].
//!
//! With the `taskdump` feature they also keep each live task's id → spawn
//! site, so a task dump (which knows tasks only by id) can be joined to
//! spawn sites; that map costs an insert and a remove per task (a lock of
//! one of 16 shards), which is why it exists only when dumps are built in.

use std::sync::atomic::Ordering;

use tokio::runtime::{Builder, TaskMeta};

use super::registry::{Registry, SpawnSite};
use super::stack::spawner_stack;

/// Sets the runtime's task spawn and terminate hooks to leakscope's, so
/// `/debug/pprof/tasks` (and `goroutine`) show live tasks by spawn site and
/// spawning function. Call it on the builder before `build()`:
///
/// ```ignore
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// builder.enable_all();
/// leakscope_agent::tasks::install_hooks(&mut builder);
/// let runtime = builder.build()?;
/// ```
///
/// tokio keeps one callback per hook: this takes the `on_task_spawn` and
/// `on_task_terminate` slots, replacing callbacks set before and replaced by
/// callbacks set after. Every runtime built from this builder reports into
/// the same process-wide registry.
pub fn install_hooks(builder: &mut Builder) -> &mut Builder {
    super::stack::prepare();
    super::INSTALLED.store(true, Ordering::Release);
    builder
        .on_task_spawn(on_spawn)
        .on_task_terminate(on_terminate)
}

fn on_spawn(meta: &TaskMeta<'_>) {
    let site = SpawnSite::from_location(meta.spawned_at());
    Registry::global().spawned(site, || spawner_stack(Registry::MAX_STACK));
    #[cfg(feature = "taskdump")]
    ids::insert(meta.id(), site);
}

fn on_terminate(meta: &TaskMeta<'_>) {
    let site = SpawnSite::from_location(meta.spawned_at());
    Registry::global().terminated(site);
    #[cfg(feature = "taskdump")]
    ids::remove(meta.id());
}

/// Live task id → spawn site, for joining task dumps to sites.
#[cfg(feature = "taskdump")]
pub(crate) mod ids {
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hash, Hasher};
    use std::sync::{Mutex, MutexGuard};

    use tokio::task::Id;

    use crate::tasks::registry::{Fnv, SpawnSite};

    const SHARDS: usize = 16;

    type Shard = Mutex<HashMap<Id, SpawnSite, BuildHasherDefault<Fnv>>>;

    static MAP: [Shard; SHARDS] =
        [const { Mutex::new(HashMap::with_hasher(BuildHasherDefault::new())) }; SHARDS];

    fn shard(id: Id) -> MutexGuard<'static, HashMap<Id, SpawnSite, BuildHasherDefault<Fnv>>> {
        let mut h = Fnv::default();
        id.hash(&mut h);
        // A panic while holding a shard leaves a plain map: keep using it.
        MAP[h.finish() as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn insert(id: Id, site: SpawnSite) {
        shard(id).insert(id, site);
    }

    pub(super) fn remove(id: Id) {
        // Blocking tasks end here without having been inserted: a no-op.
        shard(id).remove(&id);
    }

    /// The spawn site of a live task.
    pub(crate) fn site(id: Id) -> Option<SpawnSite> {
        shard(id).get(&id).copied()
    }
}
