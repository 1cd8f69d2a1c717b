//! A metered JSON parse: a serde wrapper that charges, as it goes, the heap a
//! typed value will hold (collection slots by their Rust size, string buffers),
//! and stops the parse the moment its grant is refused. A few JSON bytes can
//! become kilobytes (`{}` is a 2 KiB `Container`), so bytes read are no bound.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::mem::size_of;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

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
    let parsed = T::deserialize(Metered {
        de: &mut json,
        meter: &meter,
    })
    .and_then(|value| json.end().map(|()| value));
    let charged = Charged {
        bytes: meter.charged.get(),
        refused: meter.refused.get(),
    };
    (parsed, charged)
}

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

struct Metered<'m, D> {
    de: D,
    meter: &'m dyn Charge,
}

/// Wraps a visitor; `fields` says its map entries are a struct's fields,
/// which live inline in the struct (already charged as its slot).
struct Visit<'m, V> {
    visitor: V,
    meter: &'m dyn Charge,
    fields: bool,
}

struct Seq<'m, A> {
    seq: A,
    meter: &'m dyn Charge,
}

struct Map<'m, A> {
    map: A,
    meter: &'m dyn Charge,
    fields: bool,
    first_key: bool,
    first_value: bool,
}

struct Enum<'m, A> {
    access: A,
    meter: &'m dyn Charge,
}

struct Seed<'m, S> {
    seed: S,
    meter: &'m dyn Charge,
}

impl<'m, D> Metered<'m, D> {
    fn visit<V>(&self, visitor: V, fields: bool) -> Visit<'m, V> {
        Visit {
            visitor,
            meter: self.meter,
            fields,
        }
    }
}

// Scalars carry no heap: their visitors go through unwrapped. So do field
// names (identifiers) and skipped values.
macro_rules! scalar {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.de.$method(visitor)
        }
    )*};
}

macro_rules! wrapped {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            let visitor = self.visit(visitor, false);
            self.de.$method(visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Metered<'_, D> {
    type Error = D::Error;

    scalar!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_identifier,
        deserialize_ignored_any
    );
    wrapped!(
        deserialize_any,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.visit(visitor, false);
        self.de.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.visit(visitor, false);
        self.de.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.visit(visitor, false);
        self.de.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.visit(visitor, false);
        self.de.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.visit(visitor, true);
        self.de.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.visit(visitor, false);
        self.de.deserialize_enum(name, variants, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

macro_rules! forward_scalar {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.visitor.$method(v)
        }
    )*};
}

macro_rules! forward_text {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            charge(self.meter, string_bytes(v.len()))?;
            self.visitor.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Visit<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.visitor.expecting(f)
    }

    forward_scalar!(
        visit_bool: bool, visit_i8: i8, visit_i16: i16, visit_i32: i32, visit_i64: i64,
        visit_i128: i128, visit_u8: u8, visit_u16: u16, visit_u32: u32, visit_u64: u64,
        visit_u128: u128, visit_f32: f32, visit_f64: f64, visit_char: char
    );
    forward_text!(
        visit_str: &str, visit_borrowed_str: &'de str, visit_string: String,
        visit_bytes: &[u8], visit_borrowed_bytes: &'de [u8], visit_byte_buf: Vec<u8>
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visitor.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.visitor.visit_some(Metered {
            de,
            meter: self.meter,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.visitor.visit_newtype_struct(Metered {
            de,
            meter: self.meter,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_seq(Seq {
            seq,
            meter: self.meter,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_map(Map {
            map,
            meter: self.meter,
            fields: self.fields,
            first_key: true,
            first_value: true,
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, access: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_enum(Enum {
            access,
            meter: self.meter,
        })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        let meter = self.meter;
        let element = self.seq.next_element_seed(Seed { seed, meter })?;
        if element.is_some() {
            charge(meter, VEC_SLACK * size_of::<T::Value>())?;
        }
        Ok(element)
    }

    fn size_hint(&self) -> Option<usize> {
        self.seq.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let meter = self.meter;
        let key = self.map.next_key_seed(Seed { seed, meter })?;
        if key.is_some() && !self.fields {
            charge(meter, map_slot::<K::Value>(&mut self.first_key))?;
        }
        Ok(key)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let meter = self.meter;
        let value = self.map.next_value_seed(Seed { seed, meter })?;
        if !self.fields {
            charge(meter, map_slot::<V::Value>(&mut self.first_value))?;
        }
        Ok(value)
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
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

impl<'de, 'm, A: EnumAccess<'de>> EnumAccess<'de> for Enum<'m, A> {
    type Error = A::Error;
    type Variant = Enum<'m, A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Self::Error> {
        let (value, access) = self.access.variant_seed(seed)?;
        Ok((
            value,
            Enum {
                access,
                meter: self.meter,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Enum<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        self.access.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        let meter = self.meter;
        self.access.newtype_variant_seed(Seed { seed, meter })
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = Visit {
            visitor,
            meter: self.meter,
            fields: false,
        };
        self.access.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = Visit {
            visitor,
            meter: self.meter,
            fields: true,
        };
        self.access.struct_variant(fields, visitor)
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.seed.deserialize(Metered {
            de,
            meter: self.meter,
        })
    }
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
