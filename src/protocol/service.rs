//! A catalog entry as the `services` action shows it, and the service types of API v2.

use rust_decimal::Decimal;
use serde::{Serialize, Serializer};

/// The order shapes of Perfect Panel's published tables. Anything else an upstream lists is
/// kept as `Other` so it can be recognised and left out, not misread.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServiceType {
    Default,
    Package,
    CustomComments,
    CustomCommentsPackage,
    Mentions,
    MentionsWithHashtags,
    MentionsCustomList,
    MentionsHashtag,
    MentionsUserFollowers,
    MentionsMediaLikers,
    CommentLikes,
    CommentReplies,
    Poll,
    InvitesFromGroups,
    WebTraffic,
    Subscriptions,
    Other(String),
}

impl ServiceType {
    /// Every known type, in the order panels document them.
    pub const ALL: [ServiceType; 16] = [
        ServiceType::Default,
        ServiceType::Package,
        ServiceType::CustomComments,
        ServiceType::CustomCommentsPackage,
        ServiceType::Mentions,
        ServiceType::MentionsWithHashtags,
        ServiceType::MentionsCustomList,
        ServiceType::MentionsHashtag,
        ServiceType::MentionsUserFollowers,
        ServiceType::MentionsMediaLikers,
        ServiceType::CommentLikes,
        ServiceType::CommentReplies,
        ServiceType::Poll,
        ServiceType::InvitesFromGroups,
        ServiceType::WebTraffic,
        ServiceType::Subscriptions,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            ServiceType::Default => "Default",
            ServiceType::Package => "Package",
            ServiceType::CustomComments => "Custom Comments",
            ServiceType::CustomCommentsPackage => "Custom Comments Package",
            ServiceType::Mentions => "Mentions",
            ServiceType::MentionsWithHashtags => "Mentions with Hashtags",
            ServiceType::MentionsCustomList => "Mentions Custom List",
            ServiceType::MentionsHashtag => "Mentions Hashtag",
            ServiceType::MentionsUserFollowers => "Mentions User Followers",
            ServiceType::MentionsMediaLikers => "Mentions Media Likers",
            ServiceType::CommentLikes => "Comment Likes",
            ServiceType::CommentReplies => "Comment Replies",
            ServiceType::Poll => "Poll",
            ServiceType::InvitesFromGroups => "Invites from Groups",
            ServiceType::WebTraffic => "Web Traffic",
            ServiceType::Subscriptions => "Subscriptions",
            ServiceType::Other(name) => name,
        }
    }

    /// Reads a type name the way upstreams spell it (case and spacing vary).
    pub fn parse(text: &str) -> ServiceType {
        let folded: String = text
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|t| {
                t.as_str()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .collect::<String>()
                    .eq_ignore_ascii_case(&folded)
            })
            .unwrap_or_else(|| ServiceType::Other(text.trim().to_owned()))
    }
}

impl Serialize for ServiceType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One entry of the `services` reply. Field order and JSON types follow the seed exactly:
/// `service` a number, `rate`/`min`/`max` strings, flags booleans; `desc` only when present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub service: u64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ServiceType,
    pub category: String,
    #[serde(serialize_with = "as_string")]
    pub rate: Decimal,
    #[serde(serialize_with = "as_string")]
    pub min: u64,
    #[serde(serialize_with = "as_string")]
    pub max: u64,
    pub refill: bool,
    pub cancel: bool,
    pub dripfeed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
}

pub(crate) fn as_string<T: std::fmt::Display, S: Serializer>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip_and_tolerate_spelling() {
        for t in ServiceType::ALL {
            assert_eq!(ServiceType::parse(t.as_str()), t);
        }
        assert_eq!(
            ServiceType::parse("custom_comments"),
            ServiceType::CustomComments
        );
        assert_eq!(
            ServiceType::parse("MENTIONS WITH HASHTAGS"),
            ServiceType::MentionsWithHashtags
        );
        assert_eq!(
            ServiceType::parse(" Drip "),
            ServiceType::Other("Drip".into())
        );
    }

    #[test]
    fn serializes_in_the_seed_shape() {
        let s = Service {
            service: 1,
            name: "Followers".into(),
            kind: ServiceType::Default,
            category: "First Category".into(),
            rate: "0.90".parse().unwrap(),
            min: 50,
            max: 10000,
            refill: true,
            cancel: true,
            dripfeed: false,
            desc: None,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"service":1,"name":"Followers","type":"Default","category":"First Category","rate":"0.90","min":"50","max":"10000","refill":true,"cancel":true,"dripfeed":false}"#
        );
    }
}
