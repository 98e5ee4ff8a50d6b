//! The simulator's catalog: a built-in one covering every service type of API v2,
//! a generated one of any size for benchmarks, or one read from a YAML file.

use std::path::Path;

use rust_decimal::Decimal;
use serde::Deserialize;

use super::faults::mix;
use crate::protocol::{Service, ServiceType};

/// The built-in catalog: realistic rates, limits and flags across a few categories. Flags:
/// `R` refill, `C` cancel, `D` drip-feed.
#[rustfmt::skip]
pub fn builtin() -> Vec<Service> {
    use ServiceType as T;
    vec![
        entry(101, "Instagram Followers [Real, 30 days refill]", T::Default, "Instagram Followers", "0.90", 50, 10000, "RCD"),
        entry(102, "Instagram Likes [Fast]", T::Default, "Instagram Likes", "0.45", 20, 50000, "CD"),
        entry(103, "Instagram Custom Comments", T::CustomComments, "Instagram Comments", "8", 10, 1500, "C"),
        entry(104, "Instagram Comments Package [5 comments]", T::CustomCommentsPackage, "Instagram Comments", "2.50", 1, 1, ""),
        entry(105, "Instagram Mentions [Random users]", T::Mentions, "Instagram Mentions", "3.20", 100, 20000, "C"),
        entry(106, "Instagram Mentions with Hashtags", T::MentionsWithHashtags, "Instagram Mentions", "3.80", 100, 20000, "C"),
        entry(107, "Instagram Mentions [Custom list]", T::MentionsCustomList, "Instagram Mentions", "4.00", 10, 1000, ""),
        entry(108, "Instagram Mentions [Hashtag users]", T::MentionsHashtag, "Instagram Mentions", "3.50", 100, 10000, "C"),
        entry(109, "Instagram Mentions [User followers]", T::MentionsUserFollowers, "Instagram Mentions", "3.50", 100, 10000, "C"),
        entry(110, "Instagram Mentions [Media likers]", T::MentionsMediaLikers, "Instagram Mentions", "3.50", 100, 10000, "C"),
        entry(111, "Instagram Comment Likes", T::CommentLikes, "Instagram Comments", "1.20", 20, 5000, "C"),
        entry(112, "Instagram Comment Replies", T::CommentReplies, "Instagram Comments", "12", 1, 500, ""),
        entry(113, "Twitter Poll Votes", T::Poll, "Twitter", "2.10", 100, 20000, "C"),
        entry(114, "Telegram Group Invites", T::InvitesFromGroups, "Telegram", "6.50", 100, 5000, "C"),
        entry(115, "Website Traffic [Worldwide]", T::WebTraffic, "Website Traffic", "0.05", 100, 1000000, "CD"),
        entry(116, "Instagram Auto Likes [Subscription]", T::Subscriptions, "Instagram Likes", "0.60", 50, 5000, ""),
        entry(117, "YouTube Views [Non drop]", T::Default, "YouTube", "1.75", 100, 1000000, "RD"),
        entry(118, "TikTok Followers", T::Default, "TikTok", "2.10", 100, 50000, "RC"),
        entry(119, "YouTube Package [1000 views + 100 likes]", T::Package, "YouTube", "3.00", 1, 1, ""),
        entry(120, "Telegram Post Views", T::Default, "Telegram", "0.02", 100, 100000, "CD"),
    ]
}

#[allow(clippy::too_many_arguments)]
fn entry(
    service: u64,
    name: &str,
    kind: ServiceType,
    category: &str,
    rate: &str,
    min: u64,
    max: u64,
    flags: &str,
) -> Service {
    Service {
        service,
        name: name.into(),
        kind,
        category: category.into(),
        rate: rate.parse().unwrap_or_default(),
        min,
        max,
        refill: flags.contains('R'),
        cancel: flags.contains('C'),
        dripfeed: flags.contains('D'),
        desc: None,
    }
}

/// The built-in catalog, then generated services up to `total` entries (ids from 1001), for
/// benchmarks that need a services list of realistic size.
pub fn generated(total: usize, seed: u64) -> Vec<Service> {
    let mut list = builtin();
    let kinds = [
        ServiceType::Default,
        ServiceType::Default,
        ServiceType::Default,
        ServiceType::Package,
        ServiceType::CustomComments,
        ServiceType::Mentions,
        ServiceType::WebTraffic,
        ServiceType::Poll,
    ];
    let platforms = [
        "Instagram",
        "TikTok",
        "YouTube",
        "Twitter",
        "Telegram",
        "Facebook",
        "Spotify",
    ];
    let products = [
        "Followers",
        "Likes",
        "Views",
        "Comments",
        "Shares",
        "Saves",
        "Plays",
    ];
    let mut n = 0u64;
    while list.len() < total {
        let h = mix(seed ^ mix(n));
        let kind = kinds[(h % kinds.len() as u64) as usize].clone();
        let platform = platforms[((h >> 8) % platforms.len() as u64) as usize];
        let product = products[((h >> 16) % products.len() as u64) as usize];
        let package = matches!(kind, ServiceType::Package);
        let min = if package {
            1
        } else {
            [10, 20, 50, 100, 500][((h >> 24) % 5) as usize]
        };
        let max = if package {
            1
        } else {
            min * [100, 500, 1000, 10000][((h >> 28) % 4) as usize]
        };
        list.push(Service {
            service: 1001 + n,
            name: format!(
                "{platform} {product} [Server {}] - {}",
                n % 97 + 1,
                kind.as_str()
            ),
            kind,
            category: format!("{platform} {product}"),
            // 0.01 to 20.00 per 1000.
            rate: Decimal::new(1 + (h >> 32) as i64 % 2000, 2),
            min,
            max,
            refill: (h >> 40).is_multiple_of(3),
            cancel: (h >> 42).is_multiple_of(2),
            dripfeed: !package && (h >> 44).is_multiple_of(4),
            desc: (h >> 46)
                .is_multiple_of(2)
                .then(|| format!("Start 0-1h, speed {} per day", 1000 + (h >> 48) % 9000)),
        });
        n += 1;
    }
    list
}

/// One entry of a catalog file: the `services` reply's fields, with YAML-friendly types.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    service: u64,
    name: String,
    #[serde(rename = "type", default = "default_type")]
    kind: String,
    category: String,
    rate: Decimal,
    min: u64,
    max: u64,
    #[serde(default)]
    refill: bool,
    #[serde(default)]
    cancel: bool,
    #[serde(default)]
    dripfeed: bool,
    #[serde(default)]
    desc: Option<String>,
}

fn default_type() -> String {
    "Default".into()
}

/// Reads a catalog file: a YAML (or JSON) list of services.
pub fn load(path: &Path) -> Result<Vec<Service>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let entries: Vec<Entry> =
        serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut seen = std::collections::HashSet::new();
    entries
        .into_iter()
        .map(|e| {
            if !seen.insert(e.service) {
                return Err(format!(
                    "{}: service {} listed twice",
                    path.display(),
                    e.service
                ));
            }
            if e.min == 0 || e.min > e.max || e.rate.is_sign_negative() {
                return Err(format!(
                    "{}: service {}: need 0 < min <= max and rate >= 0",
                    path.display(),
                    e.service
                ));
            }
            Ok(Service {
                service: e.service,
                name: e.name,
                kind: ServiceType::parse(&e.kind),
                category: e.category,
                rate: e.rate,
                min: e.min,
                max: e.max,
                refill: e.refill,
                cancel: e.cancel,
                dripfeed: e.dripfeed,
                desc: e.desc,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_covers_every_service_type() {
        let list = builtin();
        for kind in ServiceType::ALL {
            assert!(list.iter().any(|s| s.kind == kind), "{kind:?} missing");
        }
        let ids: std::collections::HashSet<_> = list.iter().map(|s| s.service).collect();
        assert_eq!(ids.len(), list.len());
    }

    #[test]
    fn generated_catalog_has_the_asked_size_and_is_seeded() {
        let a = generated(3000, 5);
        assert_eq!(a.len(), 3000);
        assert_eq!(a, generated(3000, 5));
        assert_ne!(a, generated(3000, 6));
        assert!(a.iter().all(|s| s.min <= s.max && s.rate > Decimal::ZERO));
    }
}
