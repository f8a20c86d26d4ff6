//! The web viewer over the sidecar (`/ui/`): its targets with their series,
//! thresholds and alerts, and the snapshots of its store.

use std::sync::Arc;

use leakscope_agent::profile::Profile;
use leakscope_viewer::web::{SnapshotView, Source, TargetView};

use super::Shared;
use crate::ui::{store_snapshots, target_view};

/// [`Source`] over a running sidecar.
pub struct SidecarSource(pub Arc<Shared>);

impl Source for SidecarSource {
    fn title(&self) -> String {
        format!("leakscope watch: {} target(s)", self.0.targets.len())
    }

    fn targets(&self) -> Vec<TargetView> {
        self.0
            .targets
            .iter()
            .map(|t| target_view(&t.spec.name, &t.monitor))
            .collect()
    }

    fn snapshots(&self, target: Option<&str>) -> Vec<SnapshotView> {
        store_snapshots(&self.0.store, target)
    }

    fn load(&self, id: &str) -> Result<Profile, String> {
        let bytes = self.0.store.read(id).map_err(|e| e.to_string())?;
        Profile::decode_bytes(&bytes, &format!("snapshot {id}")).map_err(|e| e.to_string())
    }
}
