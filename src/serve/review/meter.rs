//! A metered JSON parse: charges, as it goes, the heap a typed value will hold
//! (collection slots by their Rust size, string buffers) and stops the parse
//! the moment its grant is refused. A few JSON bytes can become kilobytes
//! (`{}` is a 2 KiB `Container`), so bytes read are no bound. The charging
//! rules live here; `wrap` threads them through serde.

mod wrap;

use std::cell::{Cell, RefCell};
use std::mem::size_of;

use serde::de;

/// Charges are asked of the grant in steps of at least this much.
const STEP: usize = 16 * 1024;
/// A `Vec` grows by doubling, and while it moves the old buffer and the new
/// one (twice its size) both exist: a slot may cost three times its size.
const VEC_SLACK: usize = 3;
/// A `BTreeMap` allocates nodes of 11 slots that are half full or more after
/// splits, plus inner nodes.
const MAP_SLACK: usize = 3;
const MAP_NODE_SLOTS: usize = 11;

/// What a metered parse charged, and whether a grant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charged {
    /// Heap bytes charged (an upper estimate of what the value holds).
    pub bytes: usize,
    /// The parse stopped because `grant` said no.
    pub refused: bool,
}

/// Parses `body` as `T`, charging estimated heap bytes as it goes; `grant(n)`
/// is asked for `n` more bytes whenever the charge passes what it granted,
/// and a `false` stops the parse with an error.
pub fn from_slice<'de, T, G>(body: &'de [u8], grant: G) -> (serde_json::Result<T>, Charged)
where
    T: de::Deserialize<'de>,
    G: FnMut(usize) -> bool,
{
    let meter = Meter {
        grant: RefCell::new(grant),
        charged: Cell::new(0),
        granted: Cell::new(0),
        refused: Cell::new(false),
    };
    let mut json = serde_json::Deserializer::from_slice(body);
    let parsed = T::deserialize(wrap::Metered::new(&mut json, &meter))
        .and_then(|value| json.end().map(|()| value));
    let charged = Charged {
        bytes: meter.charged.get(),
        refused: meter.refused.get(),
    };
    (parsed, charged)
}

/// What the serde wrappers charge to.
trait Charge {
    /// Adds `bytes` to the charge; `false` once the grant is refused.
    fn charge(&self, bytes: usize) -> bool;
}

struct Meter<G> {
    grant: RefCell<G>,
    charged: Cell<usize>,
    granted: Cell<usize>,
    refused: Cell<bool>,
}

impl<G: FnMut(usize) -> bool> Charge for Meter<G> {
    fn charge(&self, bytes: usize) -> bool {
        let charged = self.charged.get().saturating_add(bytes);
        self.charged.set(charged);
        let granted = self.granted.get();
        if charged <= granted {
            return true;
        }
        let needed = charged - granted;
        let mut grant = self.grant.borrow_mut();
        // A step at a time; near the end of the budget, exactly what is needed.
        for more in [needed.max(STEP), needed] {
            if grant(more) {
                self.granted.set(granted + more);
                return true;
            }
        }
        self.refused.set(true);
        false
    }
}

fn charge<E: de::Error>(meter: &dyn Charge, bytes: usize) -> Result<(), E> {
    if meter.charge(bytes) {
        Ok(())
    } else {
        Err(E::custom("the review memory budget ran out"))
    }
}

/// What an owned copy of a string of `len` bytes takes from the allocator
/// (glibc: 8 bytes of header, 16-byte steps, 32 at least).
fn string_bytes(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (len + 8).next_multiple_of(16).max(32)
    }
}

/// A map entry's key or value slot; the first one pays for a whole node.
fn map_slot<T>(first: &mut bool) -> usize {
    let node = if std::mem::take(first) {
        MAP_NODE_SLOTS * size_of::<T>() + 16
    } else {
        0
    };
    node + MAP_SLACK * size_of::<T>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn unlimited<T: de::DeserializeOwned>(json: &str) -> (T, Charged) {
        let (parsed, charged) = from_slice(json.as_bytes(), |_| true);
        (parsed.unwrap(), charged)
    }

    #[test]
    fn vec_slots_and_strings_are_charged() {
        let (v, charged): (Vec<String>, _) =
            unlimited(r#"["", "abc", "a long string of 40 bytes, more or less.."]"#);
        assert_eq!(v.len(), 3);
        assert_eq!(charged.bytes, 3 * 3 * 24 + 32 + 64);
        assert!(!charged.refused);
    }

    #[test]
    fn map_entries_pay_for_their_node_and_struct_fields_are_inline() {
        let (_, map): (BTreeMap<String, String>, _) = unlimited(r#"{"a": "", "b": ""}"#);
        // Two 1-byte keys, a node of 11 keys and 11 values, 3 slots per entry.
        assert_eq!(map.bytes, 2 * 32 + 2 * (11 * 24 + 16) + 2 * 2 * 3 * 24);
        let (_, pod): (k8s_openapi::api::core::v1::Pod, _) =
            unlimited(r#"{"metadata": {"namespace": ""}, "spec": {"containers": []}}"#);
        assert_eq!(pod.bytes, 0, "empty strings and empty Vecs hold no heap");
    }

    #[test]
    fn a_refused_grant_stops_the_parse_where_it_is() {
        let json = format!("[{}{{}}]", "{},".repeat(10_000));
        let mut asked = 0;
        let (parsed, charged) =
            from_slice::<Vec<k8s_openapi::api::core::v1::Container>, _>(json.as_bytes(), |n| {
                asked += n;
                asked <= 1024 * 1024
            });
        let err = parsed.unwrap_err();
        assert!(
            err.to_string().contains("the review memory budget ran out"),
            "{err}"
        );
        assert!(charged.refused);
        assert!(charged.bytes > 1024 * 1024 && charged.bytes < 1024 * 1024 + 2 * STEP);
    }

    #[test]
    fn trailing_bytes_and_bad_json_are_errors_as_without_the_meter() {
        let (parsed, _) = from_slice::<Vec<u8>, _>(b"[1] x", |_| true);
        assert_eq!(
            parsed.unwrap_err().to_string(),
            "trailing characters at line 1 column 5"
        );
        let (parsed, charged) = from_slice::<Vec<u8>, _>(b"[1,", |_| true);
        assert_eq!(
            parsed.unwrap_err().to_string(),
            "EOF while parsing a value at line 1 column 3"
        );
        assert!(!charged.refused);
    }

    #[test]
    fn deep_nesting_ends_at_serde_jsons_recursion_limit_not_the_stack() {
        let json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let (parsed, _) = from_slice::<serde_json::Value, _>(json.as_bytes(), |_| true);
        assert!(parsed
            .unwrap_err()
            .to_string()
            .contains("recursion limit exceeded"));
    }
}
