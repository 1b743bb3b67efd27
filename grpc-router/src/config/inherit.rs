//! How a service's settings inherit from `[defaults]`: each field by the
//! rule of its type ([`Inherit`]), for every field the struct declares
//! (the [`inherited`] macro writes `over`), so a new setting cannot be left
//! out of the inheritance.

use std::collections::BTreeMap;

/// A setting a service may leave to `[defaults]`.
pub(super) trait Inherit {
    /// `self`, with what it leaves unset taken from `base`.
    fn inherit(&self, base: &Self) -> Self;
}

/// A value left out (`None`) is the default's.
impl<T: Clone> Inherit for Option<T> {
    fn inherit(&self, base: &Self) -> Self {
        self.as_ref().or(base.as_ref()).cloned()
    }
}

/// A list (allow rules, split shares) replaces the default's whole; an
/// empty one is the default's.
impl<T: Clone> Inherit for Vec<T> {
    fn inherit(&self, base: &Self) -> Self {
        if self.is_empty() { base } else { self }.clone()
    }
}

/// A map (per-method settings) adds its entries to the default's, each
/// replacing the default's entry of the same key whole.
impl<K: Ord + Clone, V: Clone> Inherit for BTreeMap<K, V> {
    fn inherit(&self, base: &Self) -> Self {
        let mut merged = base.clone();
        merged.extend(self.iter().map(|(k, v)| (k.clone(), v.clone())));
        merged
    }
}

/// Declares a settings struct (every field `pub`) and derives its
/// `over(&self, base)`: each field through [`Inherit`]. With `cfg(test)`,
/// `FIELDS` lists the fields' names, so a test can check that it covers
/// every one.
macro_rules! inherited {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident: $ty:ty,
            )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $(
                $(#[$field_meta])*
                pub $field: $ty,
            )*
        }

        impl $name {
            /// The names of the settings, as the file writes them.
            #[cfg(test)]
            pub(crate) const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// `self` over `base`: each setting of `self`, else `base`'s (a
            /// list replaces `base`'s unless empty; `methods` adds to
            /// `base`'s, method by method).
            pub fn over(&self, base: &$name) -> $name {
                $name {
                    $($field: $crate::config::inherit::Inherit::inherit(
                        &self.$field,
                        &base.$field,
                    ),)*
                }
            }
        }
    };
}

pub(super) use inherited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_value_or_an_empty_list_is_the_bases_and_a_map_adds_to_it() {
        assert_eq!(Some(1).inherit(&Some(2)), Some(1));
        assert_eq!(None.inherit(&Some(2)), Some(2));
        assert_eq!(vec![1].inherit(&vec![2, 3]), [1]);
        assert_eq!(Vec::<u8>::new().inherit(&vec![2, 3]), [2, 3]);
        let own = BTreeMap::from([("a", 1), ("b", 2)]);
        let base = BTreeMap::from([("b", 20), ("c", 30)]);
        assert_eq!(
            own.inherit(&base),
            BTreeMap::from([("a", 1), ("b", 2), ("c", 30)])
        );
    }
}
