//! The suite every `Allocator` passes (swarmkit's `RunAllocatorTests`, per implementation).

use std::collections::BTreeSet;
use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AllocError, Allocator};

/// A tiny deterministic LCG (Knuth's MMIX constants): reproducible without the rand crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 16
    }
}

/// Runs the suite. `make_small` builds a fresh allocator with `expected_capacity` items (at
/// least 5); its exhaustion message must contain `what`. `sample` maps a random number to an
/// item: mostly inside the space, sometimes reserved or outside it.
pub(crate) fn run_conformance<A>(
    make_small: impl Fn() -> A,
    expected_capacity: u64,
    what: &str,
    sample: impl Fn(u64) -> A::Item,
) where
    A: Allocator + Clone + Debug + PartialEq + Serialize + DeserializeOwned,
{
    assert!(
        expected_capacity >= 5,
        "the suite needs room to show serial reuse"
    );
    exhausts_exactly(make_small(), expected_capacity, what);
    serial_reuse(make_small());
    taken_and_release(make_small());
    random_against_model(make_small(), &sample);
}

fn exhausts_exactly<A: Allocator>(mut a: A, capacity: u64, what: &str) {
    assert_eq!(a.capacity(), capacity);
    assert_eq!(a.in_use(), 0);
    let mut got = BTreeSet::new();
    let err = loop {
        match a.allocate_next() {
            Ok(item) => assert!(got.insert(item.clone()), "{item:?} handed out twice"),
            Err(e) => break e,
        }
        assert!(
            got.len() as u64 <= capacity,
            "handed out more than the capacity"
        );
    };
    assert_eq!(got.len() as u64, capacity);
    assert_eq!(a.in_use(), capacity);
    assert!(got.iter().all(|i| a.is_allocated(i)));
    assert!(matches!(err, AllocError::Exhausted { .. }), "{err:?}");
    assert!(err.to_string().contains(what), "{err} should name {what}");
    assert_eq!(a.allocate_next().unwrap_err(), err, "stays exhausted");

    // With one item free, that item is the one handed out, wherever the cursor is.
    let freed = got.iter().nth(got.len() / 2).unwrap().clone();
    assert!(a.release(&freed));
    assert_eq!(a.allocate_next().unwrap(), freed);
}

fn serial_reuse<A: Allocator>(mut a: A) {
    let first = a.allocate_next().unwrap();
    let second = a.allocate_next().unwrap();
    let _third = a.allocate_next().unwrap();
    assert!(a.release(&second));
    let next = a.allocate_next().unwrap();
    assert_ne!(
        next, second,
        "a freed item is not reused while others are free"
    );
    assert!(a.release(&next));
    assert_ne!(
        a.allocate_next().unwrap(),
        next,
        "not even the one just handed out"
    );
    assert!(a.release(&first));
    assert!(!a.is_allocated(&first));
}

fn taken_and_release<A: Allocator + Clone>(mut a: A) {
    // An item `a` has not allocated: the one a copy would hand out next.
    let fresh = a.clone().allocate_next().unwrap();
    assert!(!a.is_allocated(&fresh));
    assert!(!a.release(&fresh), "releasing an unallocated item");

    let item = a.allocate_next().unwrap();
    let err = a.allocate_specific(item.clone()).unwrap_err();
    assert!(
        matches!(err, AllocError::Taken { .. } | AllocError::Overlaps { .. }),
        "{err:?}"
    );
    assert!(a.release(&item));
    assert!(!a.release(&item), "double release");
    a.allocate_specific(item.clone()).unwrap();
    assert!(a.is_allocated(&item));
    assert_eq!(a.in_use(), 1);
}

/// Random operations checked against a set of what is allocated. Halfway, the allocator goes
/// through serde_json (a raft snapshot restore) and both copies must behave identically.
fn random_against_model<A>(mut a: A, sample: &impl Fn(u64) -> A::Item)
where
    A: Allocator + Clone + Debug + PartialEq + Serialize + DeserializeOwned,
{
    let mut rng = Lcg(0x5eed);
    let mut model = BTreeSet::new();
    let mut restored: Option<A> = None;
    for step in 0..3000 {
        if step == 1500 {
            let json = serde_json::to_string(&a).unwrap();
            let b: A = serde_json::from_str(&json).unwrap();
            assert_eq!(b, a);
            restored = Some(b);
        }
        let r = rng.next();
        let op = r % 8;
        let arg = rng.next();
        let apply = |a: &mut A| -> String {
            match op {
                0..=2 => format!("{:?}", a.allocate_next()),
                3 | 4 => format!("{:?}", a.allocate_specific(sample(arg))),
                5 | 6 => match model.iter().nth(arg as usize % model.len().max(1)) {
                    Some(item) => format!("{:?}", a.release(item)),
                    None => String::new(),
                },
                _ => format!("{:?}", a.release(&sample(arg))),
            }
        };
        let before = a.clone();
        let outcome = apply(&mut a);
        if let Some(b) = restored.as_mut() {
            assert_eq!(apply(b), outcome, "restored copy diverged at step {step}");
        }
        // Check the outcome against the model by replaying it on the pre-step copy.
        let mut check = before;
        match op {
            0..=2 => match check.allocate_next() {
                Ok(item) => assert!(
                    model.insert(item.clone()),
                    "step {step}: {item:?} handed out twice"
                ),
                Err(e) => assert!(
                    matches!(e, AllocError::Exhausted { .. }),
                    "step {step}: {e:?}"
                ),
            },
            3 | 4 => {
                let item = sample(arg);
                let was_allocated = model.contains(&item);
                match check.allocate_specific(item.clone()) {
                    Ok(()) => assert!(
                        model.insert(item),
                        "step {step}: specific item allocated twice"
                    ),
                    Err(AllocError::OutOfRange { .. }) => assert!(!was_allocated),
                    Err(e) => assert!(
                        check.is_allocated(&item) || matches!(e, AllocError::Overlaps { .. }),
                        "{e:?}"
                    ),
                }
            }
            5 | 6 => {
                if let Some(item) = model.iter().nth(arg as usize % model.len().max(1)).cloned() {
                    assert!(check.release(&item), "step {step}: {item:?} was allocated");
                    model.remove(&item);
                }
            }
            _ => {
                let item = sample(arg);
                assert_eq!(
                    check.release(&item),
                    model.remove(&item),
                    "step {step}: release {item:?}"
                );
            }
        }
        assert_eq!(check, a, "step {step}: the operation is deterministic");
        assert_eq!(a.in_use(), model.len() as u64, "step {step}");
        assert!(model.iter().all(|i| a.is_allocated(i)), "step {step}");
    }
    assert_eq!(restored.as_ref(), Some(&a));
}
