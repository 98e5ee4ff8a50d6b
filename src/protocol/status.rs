//! Order and refill statuses: canonical spellings out, every spelling upstreams use in.

use serde::{Serialize, Serializer};

/// An order's status as the protocol shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    InProgress,
    Processing,
    Completed,
    Partial,
    Canceled,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::InProgress,
        Status::Processing,
        Status::Completed,
        Status::Partial,
        Status::Canceled,
    ];

    /// The statuses an order ends in.
    pub const FINAL: [Status; 3] = [Status::Completed, Status::Partial, Status::Canceled];

    /// A final status as an operator types it: its name in any case (none of the upstream
    /// spellings [`Status::parse`] takes, so a typo is refused instead of guessed).
    pub fn parse_final(text: &str) -> Option<Status> {
        Status::FINAL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text.trim()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::InProgress => "In progress",
            Status::Processing => "Processing",
            Status::Completed => "Completed",
            Status::Partial => "Partial",
            Status::Canceled => "Canceled",
        }
    }

    /// Whether the order will not change any more (and its refund, if any, is due).
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Partial | Status::Canceled)
    }

    /// Normalises an upstream's spelling: any case, `Cancelled`, `Refunded` (same money
    /// meaning as Canceled: the whole charge comes back), and the numeric codes
    /// 0 pending, 1 processing, 2 completed, 3 partial, 4 canceled, 5 refunded.
    pub fn parse(text: &str) -> Option<Status> {
        let folded: String = text
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .collect::<String>()
            .to_ascii_lowercase();
        Some(match folded.as_str() {
            "pending" | "0" => Status::Pending,
            "inprogress" | "active" => Status::InProgress,
            "processing" | "1" => Status::Processing,
            "completed" | "complete" | "2" => Status::Completed,
            "partial" | "partiallycompleted" | "3" => Status::Partial,
            "canceled" | "cancelled" | "cancel" | "refunded" | "refund" | "4" | "5" => {
                Status::Canceled
            }
            _ => return None,
        })
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A refill's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefillStatus {
    Pending,
    InProgress,
    Completed,
    Rejected,
    Error,
}

impl RefillStatus {
    pub const ALL: [RefillStatus; 5] = [
        RefillStatus::Pending,
        RefillStatus::InProgress,
        RefillStatus::Completed,
        RefillStatus::Rejected,
        RefillStatus::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefillStatus::Pending => "Pending",
            RefillStatus::InProgress => "In progress",
            RefillStatus::Completed => "Completed",
            RefillStatus::Rejected => "Rejected",
            RefillStatus::Error => "Error",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            RefillStatus::Completed | RefillStatus::Rejected | RefillStatus::Error
        )
    }

    pub fn parse(text: &str) -> Option<RefillStatus> {
        let folded: String = text
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .collect::<String>()
            .to_ascii_lowercase();
        Some(match folded.as_str() {
            "pending" | "0" => RefillStatus::Pending,
            "inprogress" | "processing" | "1" => RefillStatus::InProgress,
            "completed" | "complete" | "2" => RefillStatus::Completed,
            "rejected" | "canceled" | "cancelled" | "3" => RefillStatus::Rejected,
            "error" | "failed" | "4" => RefillStatus::Error,
            _ => return None,
        })
    }
}

impl Serialize for RefillStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_spellings_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        for s in RefillStatus::ALL {
            assert_eq!(RefillStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn upstream_spellings_are_normalised() {
        assert_eq!(Status::parse("In Progress"), Some(Status::InProgress));
        assert_eq!(Status::parse("in_progress"), Some(Status::InProgress));
        assert_eq!(Status::parse("Cancelled"), Some(Status::Canceled));
        assert_eq!(Status::parse("Refunded"), Some(Status::Canceled));
        assert_eq!(Status::parse("COMPLETED"), Some(Status::Completed));
        assert_eq!(Status::parse("0"), Some(Status::Pending));
        assert_eq!(Status::parse("1"), Some(Status::Processing));
        assert_eq!(Status::parse("2"), Some(Status::Completed));
        assert_eq!(Status::parse("3"), Some(Status::Partial));
        assert_eq!(Status::parse("4"), Some(Status::Canceled));
        assert_eq!(Status::parse("5"), Some(Status::Canceled));
        assert_eq!(Status::parse("shipped"), None);
        assert_eq!(
            RefillStatus::parse("in progress"),
            Some(RefillStatus::InProgress)
        );
    }

    #[test]
    fn only_final_statuses_are_final() {
        let finals: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            finals,
            [Status::Completed, Status::Partial, Status::Canceled]
        );
    }
}
