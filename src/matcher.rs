//! Names an operator writes to pick service types or categories: `types:` / `exclude_types:`
//! on import rules today, and the per-price-group `hide_types` / `hide_categories` filters
//! later. One matcher, so that every filter reads names the same way.

use std::fmt;

/// A set of names matched case-insensitively and ignoring spacing and punctuation, the way
/// upstreams vary their spelling of a type (`Custom Comments`, `custom_comments`,
/// `CUSTOM COMMENTS`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NameSet {
    /// Folded names, for matching.
    folded: Vec<String>,
    /// The names as written, for messages.
    written: Vec<String>,
}

impl NameSet {
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
            set.folded.push(f);
            set.written.push(name.trim().to_owned());
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.folded.is_empty()
    }

    /// Whether `name` is one of the set's names.
    pub fn contains(&self, name: &str) -> bool {
        let f = fold(name);
        self.folded.contains(&f)
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
}
