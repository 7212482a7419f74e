//! A backend that programs nothing and remembers what it was asked: for unit tests of the
//! logic above the load balancer.

use super::{LbBackend, LbError, MeshTable, Netns, Synced, VipTable};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Recorder {
    pub vips: Mutex<BTreeMap<Netns, VipTable>>,
    pub mesh: Mutex<Option<MeshTable>>,
}

impl LbBackend for Recorder {
    fn name(&self) -> &'static str {
        "none"
    }

    fn apply_vips(&self, ns: &Netns, table: &VipTable) -> Result<Synced, LbError> {
        let old = self
            .vips
            .lock()
            .expect("lock")
            .insert(ns.clone(), table.clone());
        Ok(if old.as_ref() == Some(table) {
            Synced::Unchanged
        } else {
            Synced::Full
        })
    }

    fn apply_mesh(&self, _ns: &Netns, table: &MeshTable) -> Result<Synced, LbError> {
        let old = self.mesh.lock().expect("lock").replace(table.clone());
        Ok(if old.as_ref() == Some(table) {
            Synced::Unchanged
        } else {
            Synced::Full
        })
    }

    fn forget(&self, ns: &Netns) {
        self.vips.lock().expect("lock").remove(ns);
    }

    fn remove_mesh(&self, _ns: &Netns) -> Result<(), LbError> {
        *self.mesh.lock().expect("lock") = None;
        Ok(())
    }
}
