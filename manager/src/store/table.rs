//! One kind of object in the store, by id: a map that remembers which ids were written since
//! the last [`Table::take_changed`] (so apply can say what an entry touched without diffing
//! the state) and, for rows that belong to a parent (a task to its service), which ids each
//! parent has (so "the tasks of one service" is not a scan of every task).
//!
//! Reads go through `Deref` to the map; every write goes through the methods here, so no
//! write can forget to record itself. Only the map is replicated: the change set is scratch
//! for the entry being applied and the parent index is rebuilt whenever a table is decoded.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};

/// A row that may belong to a parent object. The parent of a row must not change after the
/// row is inserted (a task never moves to another service): `get_mut` hands out the row
/// itself and can't see such a change.
pub trait Row {
    fn parent(&self) -> Option<&str> {
        None
    }
}

impl Row for shoal_api::objects::Task {
    fn parent(&self) -> Option<&str> {
        Some(&self.service_id)
    }
}

impl Row for shoal_api::objects::Node {}
impl Row for shoal_api::objects::Service {}
impl Row for shoal_api::objects::Network {}
impl Row for shoal_api::secrets::Secret {}
impl Row for shoal_api::secrets::Config {}
/// Sealed registry credentials by service id.
impl Row for String {}

#[derive(Clone, Debug)]
pub struct Table<T> {
    rows: BTreeMap<String, T>,
    changed: BTreeSet<String>,
    children: BTreeMap<String, BTreeSet<String>>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            rows: BTreeMap::new(),
            changed: BTreeSet::new(),
            children: BTreeMap::new(),
        }
    }
}

impl<T: Row> Table<T> {
    pub fn insert(&mut self, id: String, row: T) -> Option<T> {
        if let Some(p) = row.parent() {
            self.children
                .entry(p.to_string())
                .or_default()
                .insert(id.clone());
        }
        self.changed.insert(id.clone());
        let new_parent = row.parent().map(str::to_string);
        let old = self.rows.insert(id.clone(), row);
        if let Some(p) = old.as_ref().and_then(|o| o.parent())
            && Some(p) != new_parent.as_deref()
        {
            self.forget_child(p.to_string(), &id);
        }
        old
    }

    fn forget_child(&mut self, parent: String, id: &str) {
        if let Some(ids) = self.children.get_mut(&parent) {
            ids.remove(id);
            if ids.is_empty() {
                self.children.remove(&parent);
            }
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<T> {
        let row = self.rows.remove(id)?;
        self.changed.insert(id.to_string());
        if let Some(p) = row.parent() {
            self.forget_child(p.to_string(), id);
        }
        Some(row)
    }

    /// Counts as a change whether or not the caller then writes: over-reporting only costs
    /// a recomputation downstream, missing one would leave a view stale.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        let row = self.rows.get_mut(id)?;
        self.changed.insert(id.to_string());
        Some(row)
    }

    /// Ids of the rows whose parent is `parent`, in id order.
    pub fn children_of<'a>(&'a self, parent: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.children.get(parent).into_iter().flatten()
    }

    /// The ids written since the last call (removed ones included).
    pub fn take_changed(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed)
    }
}

impl<T> Table<T> {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl<T: Row> FromIterator<(String, T)> for Table<T> {
    fn from_iter<I: IntoIterator<Item = (String, T)>>(iter: I) -> Self {
        let mut t = Table::default();
        for (id, row) in iter {
            t.insert(id, row);
        }
        t.changed.clear();
        t
    }
}

impl<T: Row> From<BTreeMap<String, T>> for Table<T> {
    fn from(rows: BTreeMap<String, T>) -> Self {
        rows.into_iter().collect()
    }
}

impl<T> std::ops::Deref for Table<T> {
    type Target = BTreeMap<String, T>;
    fn deref(&self) -> &Self::Target {
        &self.rows
    }
}

impl<'a, T> IntoIterator for &'a Table<T> {
    type Item = (&'a String, &'a T);
    type IntoIter = std::collections::btree_map::Iter<'a, String, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.rows.iter()
    }
}

/// Two tables are equal when their rows are: the rest is bookkeeping.
impl<T: PartialEq> PartialEq for Table<T> {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows
    }
}

impl<T: Serialize> Serialize for Table<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.rows.serialize(s)
    }
}

impl<'de, T: Deserialize<'de> + Row> Deserialize<'de> for Table<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, T>::deserialize(d).map(Table::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Child(String);
    impl Row for Child {
        fn parent(&self) -> Option<&str> {
            Some(&self.0)
        }
    }

    #[test]
    fn writes_are_recorded_and_children_follow_inserts_and_removes() {
        let mut t: Table<Child> = Table::default();
        t.insert("b".into(), Child("p".into()));
        t.insert("a".into(), Child("p".into()));
        t.insert("c".into(), Child("q".into()));
        assert_eq!(t.children_of("p").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(t.take_changed().len(), 3);
        assert!(t.take_changed().is_empty());
        t.remove("a");
        t.get_mut("c");
        assert_eq!(t.take_changed(), ["a", "c"].map(String::from).into());
        assert_eq!(t.children_of("p").collect::<Vec<_>>(), ["b"]);
        t.remove("b");
        assert_eq!(t.children_of("p").count(), 0);
        assert!(t.remove("missing").is_none());
        assert_eq!(t.take_changed(), ["b"].map(String::from).into());
    }

    #[test]
    fn a_decoded_table_has_its_children_and_no_changes() {
        let mut t: Table<Child> = Table::default();
        t.insert("a".into(), Child("p".into()));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"a":"p"}"#, "encoded as the plain map it replaced");
        let mut back: Table<Child> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.children_of("p").collect::<Vec<_>>(), ["a"]);
        assert!(back.take_changed().is_empty());
    }
}
