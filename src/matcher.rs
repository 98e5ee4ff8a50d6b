//! Names an operator writes to pick service types or categories: `types:` / `exclude_types:`
//! on import rules, and `hide_types:` / `hide_categories:` on price groups and customers. One
//! matcher, so that every filter reads names the same way.

use std::collections::BTreeSet;
use std::fmt;
use std::hash::{Hash, Hasher};

/// A set of names matched case-insensitively and ignoring spacing and punctuation, the way
/// upstreams vary their spelling of a type (`Custom Comments`, `custom_comments`,
/// `CUSTOM COMMENTS`).
#[derive(Clone, Default)]
pub struct NameSet {
    /// Folded names, for matching; ordered, so that two sets spelling the same names
    /// differently are equal (and hash alike).
    folded: BTreeSet<String>,
    /// The names as written, for messages.
    written: Vec<String>,
}

impl NameSet {
    /// Nothing; usable in a `static`.
    pub const EMPTY: NameSet = NameSet {
        folded: BTreeSet::new(),
        written: Vec::new(),
    };

    /// Builds the set; an empty (or blank) name is refused, since it would match nothing a
    /// reader expects.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Result<NameSet, String> {
        let mut set = NameSet::default();
        for name in names {
            let name = name.as_ref();
            let f = fold(name);
            if f.is_empty() {
                return Err(format!("{name:?} is not a name"));
            }
            if set.folded.insert(f) {
                set.written.push(name.trim().to_owned());
            }
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.folded.is_empty()
    }

    /// Whether `name` is one of the set's names.
    pub fn contains(&self, name: &str) -> bool {
        // Most sets are empty: no folding (and no allocation) for them.
        !self.is_empty() && self.folded.contains(&fold(name))
    }

    /// The names of either set.
    pub fn union(&self, other: &NameSet) -> NameSet {
        let mut set = self.clone();
        for name in &other.written {
            if set.folded.insert(fold(name)) {
                set.written.push(name.clone());
            }
        }
        set
    }

    /// The first name, as written, that is none of `known`: to refuse a misspelt type
    /// rather than filter on a name that can never match.
    pub fn first_unknown<'a>(&'a self, known: &[&str]) -> Option<&'a str> {
        let known: BTreeSet<String> = known.iter().map(|k| fold(k)).collect();
        self.written
            .iter()
            .find(|w| !known.contains(&fold(w)))
            .map(String::as_str)
    }
}

impl PartialEq for NameSet {
    fn eq(&self, other: &NameSet) -> bool {
        self.folded == other.folded
    }
}

impl Eq for NameSet {}

impl Hash for NameSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.folded.hash(state);
    }
}

impl fmt::Debug for NameSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.written).finish()
    }
}

/// Lower-case letters and digits only.
fn fold(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// An include list and an exclude list: a name passes when the include list is empty or has
/// it, and the exclude list does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub only: NameSet,
    pub except: NameSet,
}

impl Filter {
    pub fn passes(&self, name: &str) -> bool {
        (self.only.is_empty() || self.only.contains(name)) && !self.except.contains(name)
    }
}

/// What some customers are not shown (nor sold): services of these types, or in these
/// categories. Equal filters are one key, so a reply built for one serves every customer
/// with the same filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Hidden {
    pub types: NameSet,
    pub categories: NameSet,
}

impl Hidden {
    /// Hides nothing; usable in a `static`.
    pub const NOTHING: Hidden = Hidden {
        types: NameSet::EMPTY,
        categories: NameSet::EMPTY,
    };

    pub fn hides(&self, kind: &str, category: &str) -> bool {
        self.types.contains(kind) || self.categories.contains(category)
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.categories.is_empty()
    }

    /// Hides what either hides.
    pub fn union(&self, other: &Hidden) -> Hidden {
        Hidden {
            types: self.types.union(&other.types),
            categories: self.categories.union(&other.categories),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_whatever_their_case_and_spacing() {
        let set = NameSet::new(&["Custom Comments Package", "poll"]).unwrap();
        assert!(set.contains("custom comments package"));
        assert!(set.contains("CUSTOM_COMMENTS_PACKAGE"));
        assert!(set.contains("Poll"));
        // Whole names only: a longer or shorter name is another name.
        assert!(!set.contains("Custom Comments"));
        assert!(!set.contains("Polls"));
        assert!(NameSet::new(&[" - "]).is_err());
    }

    #[test]
    fn a_filter_includes_then_excludes() {
        let everything = Filter::default();
        assert!(everything.passes("Default"));
        let f = Filter {
            only: NameSet::new(&["Default", "Package"]).unwrap(),
            except: NameSet::new(&["package"]).unwrap(),
        };
        assert!(f.passes("default"));
        assert!(!f.passes("Package"));
        assert!(!f.passes("Poll"));
    }

    #[test]
    fn sets_spelling_the_same_names_are_one_set() {
        let a = NameSet::new(&["Poll", "Mentions"]).unwrap();
        let b = NameSet::new(&["mentions", "POLL", "poll"]).unwrap();
        assert_eq!(a, b);
        let hash = |s: &NameSet| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            s.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(a, NameSet::new(&["Poll"]).unwrap());
        assert_eq!(format!("{b:?}"), r#"["mentions", "POLL"]"#);
    }

    #[test]
    fn unknown_names_are_found_as_written() {
        let set = NameSet::new(&["comment replies", "Pol"]).unwrap();
        assert_eq!(set.first_unknown(&["Comment Replies", "Poll"]), Some("Pol"));
        assert_eq!(set.first_unknown(&["Comment Replies", "Pol"]), None);
    }

    #[test]
    fn hidden_is_a_union_of_types_and_categories() {
        let group = Hidden {
            types: NameSet::new(&["Poll"]).unwrap(),
            categories: NameSet::EMPTY,
        };
        let own = Hidden {
            types: NameSet::new(&["poll", "Mentions"]).unwrap(),
            categories: NameSet::new(&["Telegram"]).unwrap(),
        };
        let both = group.union(&own);
        assert!(both.hides("POLL", "Twitter") && both.hides("Mentions", "Instagram"));
        assert!(both.hides("Default", "telegram") && !both.hides("Default", "Telegram Views"));
        assert_eq!(both, own.union(&group));
        assert!(Hidden::NOTHING.is_empty() && !Hidden::NOTHING.hides("Poll", "Twitter"));
    }
}
