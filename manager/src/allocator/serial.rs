//! A serial space of `u32` ids, e.g. VXLAN VNIs.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{AllocError, Allocator};

/// The ids in `[lo, hi]`; empty when `lo > hi`. Only used ids are stored, so a 16M-id VNI
/// space costs what is in use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SerialSpace {
    what: String,
    lo: u32,
    hi: u32,
    used: BTreeSet<u32>,
    /// The last id `allocate_next` handed out; the next search starts after it.
    cursor: Option<u32>,
}

impl SerialSpace {
    pub fn new(what: &str, lo: u32, hi: u32) -> Self {
        Self {
            what: what.to_owned(),
            lo,
            hi,
            used: BTreeSet::new(),
            cursor: None,
        }
    }

    pub fn contains(&self, id: u32) -> bool {
        (self.lo..=self.hi).contains(&id)
    }

    /// The first free id in `[from, to]`, stepping over the run of used ids that starts there.
    fn first_free(&self, from: u32, to: u32) -> Option<u32> {
        if from > to {
            return None;
        }
        let mut candidate = from;
        for &u in self.used.range(from..=to) {
            if u != candidate {
                break;
            }
            if u == to {
                return None;
            }
            candidate = u + 1;
        }
        Some(candidate)
    }
}

impl Allocator for SerialSpace {
    type Item = u32;

    fn allocate_next(&mut self) -> Result<u32, AllocError> {
        let start = match self.cursor {
            Some(c) if c >= self.lo && c < self.hi => c + 1,
            _ => self.lo,
        };
        let found = self.first_free(start, self.hi).or_else(|| {
            // Wrap around: the part before `start`, including the cursor itself.
            (start > self.lo)
                .then(|| self.first_free(self.lo, start - 1))
                .flatten()
        });
        let Some(id) = found else {
            return Err(AllocError::Exhausted {
                what: self.what.clone(),
                capacity: self.capacity(),
            });
        };
        self.used.insert(id);
        self.cursor = Some(id);
        Ok(id)
    }

    fn allocate_specific(&mut self, id: u32) -> Result<(), AllocError> {
        if !self.contains(id) {
            return Err(AllocError::OutOfRange {
                item: format!("{} {id}", self.what),
                range: format!("{}-{}", self.lo, self.hi),
            });
        }
        if !self.used.insert(id) {
            return Err(AllocError::Taken {
                item: format!("{} {id}", self.what),
            });
        }
        Ok(())
    }

    fn release(&mut self, id: &u32) -> bool {
        self.used.remove(id)
    }

    fn is_allocated(&self, id: &u32) -> bool {
        self.used.contains(id)
    }

    fn capacity(&self) -> u64 {
        if self.lo > self.hi {
            0
        } else {
            u64::from(self.hi - self.lo) + 1
        }
    }

    fn in_use(&self) -> u64 {
        self.used.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        crate::allocator::conformance::run_conformance(
            || SerialSpace::new("VXLAN id", 4096, 4111),
            16,
            "VXLAN id",
            |r| 4090 + (r % 28) as u32,
        );
    }

    #[test]
    fn vni_space_is_cheap_and_serial() {
        let mut s = SerialSpace::new("VXLAN id", 4096, 16_777_215);
        assert_eq!(s.capacity(), 16_777_216 - 4096);
        for want in 4096..14096 {
            assert_eq!(s.allocate_next().unwrap(), want);
        }
        for id in 4096..14096 {
            s.release(&id);
        }
        // Freed ids are not reused while fresh ones remain.
        assert_eq!(s.allocate_next().unwrap(), 14096);
        assert!(serde_json::to_string(&s).unwrap().len() < 100);

        s.allocate_specific(16_777_215).unwrap();
        s.allocate_specific(16_777_214).unwrap();
        s.cursor = Some(16_777_213);
        assert_eq!(s.allocate_next().unwrap(), 4096, "wraps past the used top");
        assert_eq!(
            s.allocate_specific(3).unwrap_err().to_string(),
            "VXLAN id 3 is outside 4096-16777215"
        );
        assert_eq!(
            s.allocate_specific(4096).unwrap_err().to_string(),
            "VXLAN id 4096 is already allocated"
        );
    }

    #[test]
    fn top_of_u32_and_empty_space() {
        let mut s = SerialSpace::new("id", u32::MAX - 1, u32::MAX);
        assert_eq!(s.allocate_next().unwrap(), u32::MAX - 1);
        assert_eq!(s.allocate_next().unwrap(), u32::MAX);
        assert!(s.allocate_next().is_err());
        s.release(&(u32::MAX - 1));
        assert_eq!(s.allocate_next().unwrap(), u32::MAX - 1);

        let mut empty = SerialSpace::new("id", 1, 0);
        assert_eq!(empty.capacity(), 0);
        assert_eq!(
            empty.allocate_next().unwrap_err().to_string(),
            "id exhausted: all 0 in use"
        );
    }
}
