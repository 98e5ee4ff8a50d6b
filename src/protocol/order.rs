//! The fields of an `add` request for each service type of API v2, what each bills,
//! and the form they are forwarded in.

use super::params::Params;
use super::request::positive_int;
use super::{ProtocolError, ServiceType};
use crate::money::Billing;

/// Drip-feed: `quantity` is delivered `runs` times, `interval` minutes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drip {
    pub runs: u64,
    pub interval: u64,
}

impl Drip {
    /// Runs done when `remains` of `total` units (the per-run quantity × runs) are still
    /// undelivered: the whole runs' worth of what was delivered, never more than were ordered.
    /// Over-delivery (negative `remains`) counts as every run done.
    pub fn runs_done(self, total: u64, remains: i64) -> u64 {
        let per_run = total / self.runs.max(1);
        if per_run == 0 {
            return 0;
        }
        let delivered = (i128::from(total) - i128::from(remains)).max(0);
        let runs = delivered / i128::from(per_run);
        u64::try_from(runs).map_or(self.runs, |r| r.min(self.runs))
    }
}

/// Web Traffic's source of visits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traffic {
    GoogleKeyword(String),
    Referrer(String),
    Blank,
}

/// The validated fields of one order. Which are set depends on the service type; the others
/// stay empty, so a request is forwarded with exactly the fields its type takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFields {
    pub link: Option<String>,
    pub quantity: Option<u64>,
    pub drip: Option<Drip>,
    pub comments: Option<Vec<String>>,
    pub usernames: Option<Vec<String>>,
    pub hashtags: Option<Vec<String>>,
    pub hashtag: Option<String>,
    pub username: Option<String>,
    pub media: Option<String>,
    pub answer_number: Option<u64>,
    pub groups: Option<Vec<String>>,
    pub country: Option<String>,
    pub device: Option<u64>,
    pub traffic: Option<Traffic>,
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub posts: Option<u64>,
    pub old_posts: Option<u64>,
    pub delay: Option<u64>,
    pub expiry: Option<String>,
}

/// Subscription delays a panel offers, in minutes.
const DELAYS: [u64; 19] = [
    0, 5, 10, 15, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 360, 420, 480, 540, 600,
];

impl OrderFields {
    /// Reads and validates the fields `kind` takes. Fields of other types are ignored.
    /// Service limits (min/max, drip-feed allowed) are the caller's: see
    /// [`OrderFields::limited_quantity`].
    pub fn parse(kind: &ServiceType, p: &Params) -> Result<OrderFields, ProtocolError> {
        use ServiceType as T;
        let mut f = OrderFields::default();
        if !matches!(kind, T::Subscriptions) {
            f.link = Some(required(p, "link")?.to_owned());
        }
        match kind {
            T::Default => {
                f.quantity = Some(quantity(p)?);
                f.drip = drip(p)?;
            }
            T::Package => {}
            T::CustomComments | T::CustomCommentsPackage => {
                f.comments = Some(lines(p, "comments")?)
            }
            T::Mentions => {
                f.quantity = Some(quantity(p)?);
                f.usernames = Some(lines(p, "usernames")?);
            }
            T::MentionsWithHashtags => {
                f.quantity = Some(quantity(p)?);
                f.usernames = Some(lines(p, "usernames")?);
                f.hashtags = Some(lines(p, "hashtags")?);
            }
            T::MentionsCustomList => f.usernames = Some(lines(p, "usernames")?),
            T::MentionsHashtag => {
                f.quantity = Some(quantity(p)?);
                f.hashtag = Some(required(p, "hashtag")?.to_owned());
            }
            T::MentionsUserFollowers | T::CommentLikes => {
                f.quantity = Some(quantity(p)?);
                f.username = Some(required(p, "username")?.to_owned());
            }
            T::MentionsMediaLikers => {
                f.quantity = Some(quantity(p)?);
                f.media = Some(required(p, "media")?.to_owned());
            }
            T::CommentReplies => {
                f.username = Some(required(p, "username")?.to_owned());
                f.comments = Some(lines(p, "comments")?);
            }
            T::Poll => {
                f.quantity = Some(quantity(p)?);
                f.answer_number = Some(
                    positive_int(required(p, "answer_number")?)
                        .ok_or(ProtocolError::Invalid("answer_number"))?,
                );
            }
            T::InvitesFromGroups => {
                f.quantity = Some(quantity(p)?);
                f.groups = Some(lines(p, "groups")?);
            }
            T::WebTraffic => {
                f.quantity = Some(quantity(p)?);
                f.drip = drip(p)?;
                f.country = optional(p, "country")?.map(str::to_owned);
                f.device = optional(p, "device")?
                    .map(|d| number(d).filter(|d| (1..=5).contains(d)))
                    .map(|d| d.ok_or(ProtocolError::Invalid("device")))
                    .transpose()?;
                f.traffic = match optional(p, "type_of_traffic")? {
                    None => None,
                    Some("1") => Some(Traffic::GoogleKeyword(
                        required(p, "google_keyword")?.to_owned(),
                    )),
                    Some("2") => Some(Traffic::Referrer(required(p, "referring_url")?.to_owned())),
                    Some("3") => Some(Traffic::Blank),
                    Some(_) => return Err(ProtocolError::Invalid("type_of_traffic")),
                };
            }
            T::Subscriptions => {
                f.username = Some(required(p, "username")?.to_owned());
                let min = positive_int(required(p, "min")?).ok_or(ProtocolError::Invalid("min"))?;
                let max = positive_int(required(p, "max")?).ok_or(ProtocolError::Invalid("max"))?;
                if min > max {
                    return Err(ProtocolError::Invalid("min: it is above max"));
                }
                f.min = Some(min);
                f.max = Some(max);
                f.posts = optional_count(p, "posts")?;
                f.old_posts = optional_count(p, "old_posts")?;
                f.delay = optional(p, "delay")?
                    .map(|d| number(d).filter(|d| DELAYS.contains(d)))
                    .map(|d| d.ok_or(ProtocolError::Invalid("delay")))
                    .transpose()?;
                f.expiry = optional(p, "expiry")?
                    .map(|e| valid_date(e).then(|| e.to_owned()))
                    .map(|e| e.ok_or(ProtocolError::Invalid("expiry")))
                    .transpose()?;
            }
            T::Other(_) => return Err(ProtocolError::IncorrectServiceId),
        }
        Ok(f)
    }

    /// How the order is billed.
    pub fn billing(&self, kind: &ServiceType) -> Billing {
        use ServiceType as T;
        let count = |v: &Option<Vec<String>>| v.as_ref().map_or(0, |v| v.len() as u64);
        match kind {
            T::Package | T::CustomCommentsPackage => Billing::Package,
            T::Subscriptions => Billing::PerPost,
            T::CustomComments | T::CommentReplies => Billing::PerThousand(count(&self.comments)),
            T::MentionsCustomList => Billing::PerThousand(count(&self.usernames)),
            _ => {
                let per_run = self.quantity.unwrap_or(0);
                let runs = self.drip.map_or(1, |d| d.runs);
                Billing::PerThousand(per_run.saturating_mul(runs))
            }
        }
    }

    /// The number a service's min/max applies to: the quantity per run, or the count of
    /// lines where the lines are what is ordered. `None` for packages.
    pub fn limited_quantity(&self, kind: &ServiceType) -> Option<u64> {
        use ServiceType as T;
        match kind {
            T::Package | T::CustomCommentsPackage => None,
            T::Subscriptions => self.max,
            T::CustomComments | T::CommentReplies => self.comments.as_ref().map(|c| c.len() as u64),
            T::MentionsCustomList => self.usernames.as_ref().map(|u| u.len() as u64),
            _ => self.quantity,
        }
    }

    /// The service limits every panel enforces: min/max with the texts clients match, and
    /// drip-feed only where the service offers it.
    pub fn check_limits(
        &self,
        kind: &ServiceType,
        min: u64,
        max: u64,
        dripfeed: bool,
    ) -> Result<(), ProtocolError> {
        if self.drip.is_some() && !dripfeed {
            return Err(ProtocolError::DripfeedDisabled);
        }
        // A subscription's per-post range must lie within the service's: its `min` too.
        if let (ServiceType::Subscriptions, Some(low)) = (kind, self.min)
            && low < min
        {
            return Err(ProtocolError::QuantityBelowMin(min));
        }
        if let Some(q) = self.limited_quantity(kind) {
            if q < min {
                return Err(ProtocolError::QuantityBelowMin(min));
            }
            if q > max {
                return Err(ProtocolError::QuantityAboveMax(max));
            }
        }
        Ok(())
    }

    /// The fields as form pairs, for forwarding to an upstream (`service`, `key` and
    /// `action` are the caller's). Lines are joined with `\n`.
    pub fn to_form(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut put = |name: &'static str, value: Option<String>| {
            if let Some(v) = value {
                out.push((name, v));
            }
        };
        let join = |v: &Option<Vec<String>>| v.as_ref().map(|v| v.join("\n"));
        put("link", self.link.clone());
        put("quantity", self.quantity.map(|q| q.to_string()));
        put("runs", self.drip.map(|d| d.runs.to_string()));
        put("interval", self.drip.map(|d| d.interval.to_string()));
        put("comments", join(&self.comments));
        put("usernames", join(&self.usernames));
        put("hashtags", join(&self.hashtags));
        put("hashtag", self.hashtag.clone());
        put("username", self.username.clone());
        put("media", self.media.clone());
        put("answer_number", self.answer_number.map(|a| a.to_string()));
        put("groups", join(&self.groups));
        put("country", self.country.clone());
        put("device", self.device.map(|d| d.to_string()));
        match &self.traffic {
            Some(Traffic::GoogleKeyword(k)) => {
                put("type_of_traffic", Some("1".into()));
                put("google_keyword", Some(k.clone()));
            }
            Some(Traffic::Referrer(r)) => {
                put("type_of_traffic", Some("2".into()));
                put("referring_url", Some(r.clone()));
            }
            Some(Traffic::Blank) => put("type_of_traffic", Some("3".into())),
            None => {}
        }
        put("min", self.min.map(|m| m.to_string()));
        put("max", self.max.map(|m| m.to_string()));
        put("posts", self.posts.map(|m| m.to_string()));
        put("old_posts", self.old_posts.map(|m| m.to_string()));
        put("delay", self.delay.map(|m| m.to_string()));
        put("expiry", self.expiry.clone());
        out
    }
}

fn optional<'a>(p: &'a Params, name: &'static str) -> Result<Option<&'a str>, ProtocolError> {
    p.text(name).map_err(|_| ProtocolError::Invalid(name))
}

fn required<'a>(p: &'a Params, name: &'static str) -> Result<&'a str, ProtocolError> {
    optional(p, name)?.ok_or(ProtocolError::Missing(name))
}

fn quantity(p: &Params) -> Result<u64, ProtocolError> {
    positive_int(required(p, "quantity")?).ok_or(ProtocolError::Invalid("quantity"))
}

fn number(text: &str) -> Option<u64> {
    let t = text.trim();
    (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .then(|| t.parse().ok())
        .flatten()
}

fn optional_count(p: &Params, name: &'static str) -> Result<Option<u64>, ProtocolError> {
    optional(p, name)?
        .map(|v| number(v).ok_or(ProtocolError::Invalid(name)))
        .transpose()
}

fn drip(p: &Params) -> Result<Option<Drip>, ProtocolError> {
    match (optional(p, "runs")?, optional(p, "interval")?) {
        (None, None) => Ok(None),
        (Some(runs), Some(interval)) => Ok(Some(Drip {
            runs: positive_int(runs).ok_or(ProtocolError::Invalid("runs"))?,
            interval: positive_int(interval).ok_or(ProtocolError::Invalid("interval"))?,
        })),
        _ => Err(ProtocolError::DripfeedIncomplete),
    }
}

/// One entry per non-empty line; `\n` and `\r\n` alike. A JSON array works too.
fn lines(p: &Params, name: &'static str) -> Result<Vec<String>, ProtocolError> {
    use super::params::Value;
    let items: Vec<String> = match p.get(name) {
        None => Vec::new(),
        Some(Value::One(text)) => split_lines(text),
        Some(Value::List(list)) => list.iter().flat_map(|t| split_lines(t)).collect(),
    };
    // A lone `undefined` line would be forwarded as `name=undefined`, which means "not given".
    if items.is_empty() || items == ["undefined"] {
        return Err(ProtocolError::Missing(name));
    }
    Ok(items)
}

pub fn split_lines(text: &str) -> Vec<String> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `d/m/Y`, as panels take subscription expiry dates.
fn valid_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('/').collect();
    let [d, m, y] = parts.as_slice() else {
        return false;
    };
    let ok =
        |s: &str, len: std::ops::RangeInclusive<usize>, range: std::ops::RangeInclusive<u64>| {
            len.contains(&s.len()) && number(s).is_some_and(|n| range.contains(&n))
        };
    if !(ok(d, 1..=2, 1..=31) && ok(m, 1..=2, 1..=12) && ok(y, 4..=4, 2000..=9999)) {
        return false;
    }
    // A day that exists in that month (no 31/04, no 29/02 outside leap years).
    let (Some(d), Some(m), Some(y)) = (number(d), number(m), number(y)) else {
        return false;
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    d <= days
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServiceType as T;

    fn form(s: &str) -> Params {
        Params::parse_form(s.as_bytes()).unwrap()
    }

    fn parse(kind: &ServiceType, s: &str) -> Result<OrderFields, ProtocolError> {
        OrderFields::parse(kind, &form(s))
    }

    fn ok(kind: &ServiceType, s: &str) -> OrderFields {
        parse(kind, s).unwrap_or_else(|e| panic!("{kind:?} {s}: {e}"))
    }

    fn strings(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    fn link() -> Option<String> {
        Some("https://x.y/p".into())
    }

    fn form_of(f: &OrderFields) -> Vec<(&'static str, String)> {
        f.to_form()
    }

    fn pairs(v: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        v.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn default() {
        let f = ok(&T::Default, "link=https%3A%2F%2Fx.y%2Fp&quantity=100");
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                quantity: Some(100),
                ..Default::default()
            }
        );
        assert_eq!(f.billing(&T::Default), Billing::PerThousand(100));
        assert_eq!(f.limited_quantity(&T::Default), Some(100));
        assert_eq!(
            form_of(&f),
            pairs(&[("link", "https://x.y/p"), ("quantity", "100")])
        );
        // Fields of other types are ignored, not forwarded.
        let g = ok(
            &T::Default,
            "link=https%3A%2F%2Fx.y%2Fp&quantity=100&comments=a&username=u&expiry=1/1/2030",
        );
        assert_eq!(f, g);
    }

    #[test]
    fn default_with_drip_feed() {
        let f = ok(
            &T::Default,
            "link=https%3A%2F%2Fx.y%2Fp&quantity=100&runs=5&interval=30",
        );
        assert_eq!(f.quantity, Some(100));
        assert_eq!(
            f.drip,
            Some(Drip {
                runs: 5,
                interval: 30
            })
        );
        // Quantity is per run: the limits apply to it, the bill is for all runs.
        assert_eq!(f.billing(&T::Default), Billing::PerThousand(500));
        assert_eq!(f.limited_quantity(&T::Default), Some(100));
        assert_eq!(
            form_of(&f),
            pairs(&[
                ("link", "https://x.y/p"),
                ("quantity", "100"),
                ("runs", "5"),
                ("interval", "30"),
            ])
        );
        // `undefined` and empty drip fields are no drip-feed (the Node SDK sends them).
        for body in [
            "link=l&quantity=100&runs=undefined&interval=undefined",
            "link=l&quantity=100&runs=&interval=",
        ] {
            assert_eq!(ok(&T::Default, body).drip, None, "{body}");
        }
    }

    #[test]
    fn runs_done_are_whole_runs_of_what_was_delivered() {
        // 4 runs of 100: 400 units.
        let d = Drip {
            runs: 4,
            interval: 30,
        };
        // 193 delivered: one whole run and part of the second.
        assert_eq!(d.runs_done(400, 207), 1);
        assert_eq!(d.runs_done(400, 400), 0);
        assert_eq!(d.runs_done(400, 200), 2);
        assert_eq!(d.runs_done(400, 0), 4);
        // Over-delivered: every run, no more; a remains above the total: none.
        assert_eq!(d.runs_done(400, -50), 4);
        assert_eq!(d.runs_done(400, 900), 0);
        assert_eq!(d.runs_done(400, i64::MIN), 4);
    }

    #[test]
    fn drip_feed_comes_whole_or_not_at_all() {
        for body in [
            "link=l&quantity=100&runs=5",
            "link=l&quantity=100&interval=30",
            "link=l&quantity=100&runs=5&interval=undefined",
            "link=l&quantity=100&runs=&interval=30",
        ] {
            assert_eq!(
                parse(&T::Default, body),
                Err(ProtocolError::DripfeedIncomplete),
                "{body}"
            );
        }
        assert_eq!(
            parse(&T::Default, "link=l&quantity=100&runs=0&interval=30"),
            Err(ProtocolError::Invalid("runs"))
        );
        assert_eq!(
            parse(&T::Default, "link=l&quantity=100&runs=2&interval=x"),
            Err(ProtocolError::Invalid("interval"))
        );
        assert_eq!(
            parse(&T::Default, "link=l&quantity=100&runs[]=2&interval=3"),
            Err(ProtocolError::Invalid("runs"))
        );
        // Huge values do not overflow the bill.
        let f = ok(
            &T::Default,
            "link=l&quantity=18446744073709551615&runs=2&interval=1",
        );
        assert_eq!(f.billing(&T::Default), Billing::PerThousand(u64::MAX));
    }

    #[test]
    fn package() {
        let f = ok(&T::Package, "link=https%3A%2F%2Fx.y%2Fp&quantity=100");
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                ..Default::default()
            }
        );
        assert_eq!(f.billing(&T::Package), Billing::Package);
        assert_eq!(f.limited_quantity(&T::Package), None);
        assert_eq!(f.check_limits(&T::Package, 50, 100, false), Ok(()));
        assert_eq!(form_of(&f), pairs(&[("link", "https://x.y/p")]));
        assert_eq!(
            parse(&T::Package, "quantity=1"),
            Err(ProtocolError::Missing("link"))
        );
    }

    #[test]
    fn custom_comments() {
        let f = ok(
            &T::CustomComments,
            "link=https%3A%2F%2Fx.y%2Fp&comments=Nice%21%0ASuper%0D%0A%0D%0A++%0Awow+%F0%9F%94%A5%0A",
        );
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                comments: strings(&["Nice!", "Super", "wow 🔥"]),
                ..Default::default()
            }
        );
        assert_eq!(f.billing(&T::CustomComments), Billing::PerThousand(3));
        assert_eq!(f.limited_quantity(&T::CustomComments), Some(3));
        assert_eq!(
            form_of(&f),
            pairs(&[
                ("link", "https://x.y/p"),
                ("comments", "Nice!\nSuper\nwow 🔥")
            ])
        );
        // A quantity does not change what is billed: the lines are the order.
        let g = ok(&T::CustomComments, "link=l&comments=a%0Ab&quantity=1000");
        assert_eq!(g.quantity, None);
        assert_eq!(g.billing(&T::CustomComments), Billing::PerThousand(2));
        for body in [
            "link=l",
            "link=l&comments=",
            "link=l&comments=%0A%0D%0A+%0A",
        ] {
            assert_eq!(
                parse(&T::CustomComments, body),
                Err(ProtocolError::Missing("comments")),
                "{body}"
            );
        }
        assert_eq!(
            parse(&T::CustomComments, "comments=a"),
            Err(ProtocolError::Missing("link"))
        );
        // A lone `undefined` line is no comment (forwarded, it would mean "not given"); among
        // others it is just a comment.
        for body in [
            "link=l&comments=undefined%0A",
            "link=l&comments=%0D%0A+undefined",
        ] {
            assert_eq!(
                parse(&T::CustomComments, body),
                Err(ProtocolError::Missing("comments")),
                "{body}"
            );
        }
        assert_eq!(
            ok(&T::CustomComments, "link=l&comments=undefined%0Aok").comments,
            strings(&["undefined", "ok"])
        );
        // A JSON array of comments works too, and its elements may hold several lines.
        let p = Params::parse_json(br#"{"link":"l","comments":["a","b\nc",""]}"#).unwrap();
        let f = OrderFields::parse(&T::CustomComments, &p).unwrap();
        assert_eq!(f.comments, strings(&["a", "b", "c"]));
    }

    #[test]
    fn custom_comments_package() {
        let f = ok(
            &T::CustomCommentsPackage,
            "link=https%3A%2F%2Fx.y%2Fp&comments=a%0Ab",
        );
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                comments: strings(&["a", "b"]),
                ..Default::default()
            }
        );
        assert_eq!(f.billing(&T::CustomCommentsPackage), Billing::Package);
        assert_eq!(f.limited_quantity(&T::CustomCommentsPackage), None);
        assert_eq!(
            parse(&T::CustomCommentsPackage, "link=l"),
            Err(ProtocolError::Missing("comments"))
        );
    }

    #[test]
    fn mentions() {
        let f = ok(
            &T::Mentions,
            "link=https%3A%2F%2Fx.y%2Fp&quantity=100&usernames=alice%0D%0Abob%0A",
        );
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                quantity: Some(100),
                usernames: strings(&["alice", "bob"]),
                ..Default::default()
            }
        );
        assert_eq!(f.billing(&T::Mentions), Billing::PerThousand(100));
        assert_eq!(f.limited_quantity(&T::Mentions), Some(100));
        assert_eq!(
            form_of(&f),
            pairs(&[
                ("link", "https://x.y/p"),
                ("quantity", "100"),
                ("usernames", "alice\nbob"),
            ])
        );
        assert_eq!(
            parse(&T::Mentions, "link=l&quantity=100"),
            Err(ProtocolError::Missing("usernames"))
        );
        assert_eq!(
            parse(&T::Mentions, "link=l&usernames=a"),
            Err(ProtocolError::Missing("quantity"))
        );
    }

    #[test]
    fn mentions_with_hashtags() {
        let f = ok(
            &T::MentionsWithHashtags,
            "link=https%3A%2F%2Fx.y%2Fp&quantity=100&usernames=alice%0Abob&hashtags=%23one%0A%23two",
        );
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                quantity: Some(100),
                usernames: strings(&["alice", "bob"]),
                hashtags: strings(&["#one", "#two"]),
                ..Default::default()
            }
        );
        assert_eq!(
            f.billing(&T::MentionsWithHashtags),
            Billing::PerThousand(100)
        );
        assert_eq!(
            form_of(&f),
            pairs(&[
                ("link", "https://x.y/p"),
                ("quantity", "100"),
                ("usernames", "alice\nbob"),
                ("hashtags", "#one\n#two"),
            ])
        );
        assert_eq!(
            parse(&T::MentionsWithHashtags, "link=l&quantity=100&usernames=a"),
            Err(ProtocolError::Missing("hashtags"))
        );
    }

    #[test]
    fn mentions_custom_list() {
        let f = ok(
            &T::MentionsCustomList,
            "link=https%3A%2F%2Fx.y%2Fp&usernames=alice%0Abob%0Acarol&quantity=5",
        );
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                usernames: strings(&["alice", "bob", "carol"]),
                ..Default::default()
            }
        );
        assert_eq!(f.billing(&T::MentionsCustomList), Billing::PerThousand(3));
        assert_eq!(f.limited_quantity(&T::MentionsCustomList), Some(3));
        assert_eq!(
            form_of(&f),
            pairs(&[
                ("link", "https://x.y/p"),
                ("usernames", "alice\nbob\ncarol")
            ])
        );
        assert_eq!(
            parse(&T::MentionsCustomList, "link=l"),
            Err(ProtocolError::Missing("usernames"))
        );
    }

    #[test]
    fn mentions_hashtag() {
        let f = ok(
            &T::MentionsHashtag,
            "link=https%3A%2F%2Fx.y%2Fp&quantity=100&hashtag=%23sale",
        );
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                quantity: Some(100),
                hashtag: Some("#sale".into()),
                ..Default::default()
            }
        );
        assert_eq!(f.billing(&T::MentionsHashtag), Billing::PerThousand(100));
        assert_eq!(
            form_of(&f),
            pairs(&[
                ("link", "https://x.y/p"),
                ("quantity", "100"),
                ("hashtag", "#sale")
            ])
        );
        assert_eq!(
            parse(&T::MentionsHashtag, "link=l&quantity=100&hashtags=%23a"),
            Err(ProtocolError::Missing("hashtag"))
        );
    }

    #[test]
    fn mentions_user_followers_and_comment_likes() {
        for kind in [T::MentionsUserFollowers, T::CommentLikes] {
            let f = ok(
                &kind,
                "link=https%3A%2F%2Fx.y%2Fp&quantity=100&username=+alice+",
            );
            assert_eq!(
                f,
                OrderFields {
                    link: link(),
                    quantity: Some(100),
                    username: Some("alice".into()),
                    ..Default::default()
                },
                "{kind:?}"
            );
            assert_eq!(f.billing(&kind), Billing::PerThousand(100));
            assert_eq!(f.limited_quantity(&kind), Some(100));
            assert_eq!(
                form_of(&f),
                pairs(&[
                    ("link", "https://x.y/p"),
                    ("quantity", "100"),
                    ("username", "alice")
                ])
            );
            assert_eq!(
                parse(&kind, "link=l&quantity=100&usernames=a"),
                Err(ProtocolError::Missing("username")),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn mentions_media_likers() {
        let f = ok(
            &T::MentionsMediaLikers,
            "link=https%3A%2F%2Fx.y%2Fp&quantity=100&media=https%3A%2F%2Fx.y%2Fm",
        );
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                quantity: Some(100),
                media: Some("https://x.y/m".into()),
                ..Default::default()
            }
        );
        assert_eq!(
            f.billing(&T::MentionsMediaLikers),
            Billing::PerThousand(100)
        );
        assert_eq!(
            form_of(&f),
            pairs(&[
                ("link", "https://x.y/p"),
                ("quantity", "100"),
                ("media", "https://x.y/m")
            ])
        );
        assert_eq!(
            parse(&T::MentionsMediaLikers, "link=l&quantity=100"),
            Err(ProtocolError::Missing("media"))
        );
    }

    #[test]
    fn comment_replies() {
        let f = ok(
            &T::CommentReplies,
            "link=https%3A%2F%2Fx.y%2Fp&username=alice&comments=yes%0D%0Ano%0D%0A",
        );
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                username: Some("alice".into()),
                comments: strings(&["yes", "no"]),
                ..Default::default()
            }
        );
        assert_eq!(f.billing(&T::CommentReplies), Billing::PerThousand(2));
        assert_eq!(f.limited_quantity(&T::CommentReplies), Some(2));
        assert_eq!(
            form_of(&f),
            pairs(&[
                ("link", "https://x.y/p"),
                ("comments", "yes\nno"),
                ("username", "alice")
            ])
        );
        assert_eq!(
            parse(&T::CommentReplies, "link=l&comments=a"),
            Err(ProtocolError::Missing("username"))
        );
        assert_eq!(
            parse(&T::CommentReplies, "link=l&username=u"),
            Err(ProtocolError::Missing("comments"))
        );
    }

    #[test]
    fn poll() {
        let f = ok(
            &T::Poll,
            "link=https%3A%2F%2Fx.y%2Fp&quantity=100&answer_number=2",
        );
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                quantity: Some(100),
                answer_number: Some(2),
                ..Default::default()
            }
        );
        assert_eq!(f.billing(&T::Poll), Billing::PerThousand(100));
        assert_eq!(
            form_of(&f),
            pairs(&[
                ("link", "https://x.y/p"),
                ("quantity", "100"),
                ("answer_number", "2")
            ])
        );
        assert_eq!(
            parse(&T::Poll, "link=l&quantity=100"),
            Err(ProtocolError::Missing("answer_number"))
        );
        for bad in ["0", "-1", "b", "1.5"] {
            assert_eq!(
                parse(
                    &T::Poll,
                    &format!("link=l&quantity=100&answer_number={bad}")
                ),
                Err(ProtocolError::Invalid("answer_number")),
                "{bad}"
            );
        }
    }

    #[test]
    fn invites_from_groups() {
        let f = ok(
            &T::InvitesFromGroups,
            "link=https%3A%2F%2Fx.y%2Fp&quantity=100&groups=g1%0Ag2%0D%0Ag3",
        );
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                quantity: Some(100),
                groups: strings(&["g1", "g2", "g3"]),
                ..Default::default()
            }
        );
        // Billed by quantity, not by the number of groups.
        assert_eq!(f.billing(&T::InvitesFromGroups), Billing::PerThousand(100));
        assert_eq!(f.limited_quantity(&T::InvitesFromGroups), Some(100));
        assert_eq!(
            form_of(&f),
            pairs(&[
                ("link", "https://x.y/p"),
                ("quantity", "100"),
                ("groups", "g1\ng2\ng3")
            ])
        );
        assert_eq!(
            parse(&T::InvitesFromGroups, "link=l&quantity=100"),
            Err(ProtocolError::Missing("groups"))
        );
    }

    #[test]
    fn web_traffic() {
        let f = ok(&T::WebTraffic, "link=https%3A%2F%2Fx.y%2Fp&quantity=1000");
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                quantity: Some(1000),
                ..Default::default()
            }
        );
        let f = ok(
            &T::WebTraffic,
            "link=https%3A%2F%2Fx.y%2Fp&quantity=1000&runs=2&interval=60&country=US&device=5\
             &type_of_traffic=1&google_keyword=buy+shoes",
        );
        assert_eq!(
            f,
            OrderFields {
                link: link(),
                quantity: Some(1000),
                drip: Some(Drip {
                    runs: 2,
                    interval: 60
                }),
                country: Some("US".into()),
                device: Some(5),
                traffic: Some(Traffic::GoogleKeyword("buy shoes".into())),
                ..Default::default()
            }
        );
        assert_eq!(f.billing(&T::WebTraffic), Billing::PerThousand(2000));
        assert_eq!(f.limited_quantity(&T::WebTraffic), Some(1000));
        assert_eq!(
            form_of(&f),
            pairs(&[
                ("link", "https://x.y/p"),
                ("quantity", "1000"),
                ("runs", "2"),
                ("interval", "60"),
                ("country", "US"),
                ("device", "5"),
                ("type_of_traffic", "1"),
                ("google_keyword", "buy shoes"),
            ])
        );

        let f = ok(
            &T::WebTraffic,
            "link=l&quantity=10&type_of_traffic=2&referring_url=https%3A%2F%2Fref.example%2F",
        );
        assert_eq!(
            f.traffic,
            Some(Traffic::Referrer("https://ref.example/".into()))
        );
        assert_eq!(
            form_of(&f),
            pairs(&[
                ("link", "l"),
                ("quantity", "10"),
                ("type_of_traffic", "2"),
                ("referring_url", "https://ref.example/"),
            ])
        );
        // Blank traffic ignores keyword and referrer.
        let f = ok(
            &T::WebTraffic,
            "link=l&quantity=10&type_of_traffic=3&google_keyword=k&referring_url=r",
        );
        assert_eq!(f.traffic, Some(Traffic::Blank));
        assert_eq!(
            form_of(&f),
            pairs(&[("link", "l"), ("quantity", "10"), ("type_of_traffic", "3")])
        );

        for device in 1..=5 {
            let f = ok(
                &T::WebTraffic,
                &format!("link=l&quantity=10&device={device}"),
            );
            assert_eq!(f.device, Some(device));
        }
        for bad in ["0", "6", "x", "-1", "1.0"] {
            assert_eq!(
                parse(&T::WebTraffic, &format!("link=l&quantity=10&device={bad}")),
                Err(ProtocolError::Invalid("device")),
                "{bad}"
            );
        }
        for bad in ["0", "4", "google", "01"] {
            assert_eq!(
                parse(
                    &T::WebTraffic,
                    &format!("link=l&quantity=10&type_of_traffic={bad}")
                ),
                Err(ProtocolError::Invalid("type_of_traffic")),
                "{bad}"
            );
        }
        assert_eq!(
            parse(&T::WebTraffic, "link=l&quantity=10&type_of_traffic=1"),
            Err(ProtocolError::Missing("google_keyword"))
        );
        assert_eq!(
            parse(
                &T::WebTraffic,
                "link=l&quantity=10&type_of_traffic=2&google_keyword=k"
            ),
            Err(ProtocolError::Missing("referring_url"))
        );
        assert_eq!(
            parse(&T::WebTraffic, "link=l&quantity=10&runs=3"),
            Err(ProtocolError::DripfeedIncomplete)
        );
        assert_eq!(
            parse(&T::WebTraffic, "link=l&quantity=10&country[]=US"),
            Err(ProtocolError::Invalid("country"))
        );
    }

    #[test]
    fn subscriptions() {
        let f = ok(&T::Subscriptions, "username=alice&min=100&max=200");
        assert_eq!(
            f,
            OrderFields {
                username: Some("alice".into()),
                min: Some(100),
                max: Some(200),
                ..Default::default()
            }
        );
        assert_eq!(f.billing(&T::Subscriptions), Billing::PerPost);
        assert_eq!(f.limited_quantity(&T::Subscriptions), Some(200));
        assert_eq!(
            form_of(&f),
            pairs(&[("username", "alice"), ("min", "100"), ("max", "200")])
        );

        // No link: a link sent anyway is not forwarded.
        let f = ok(
            &T::Subscriptions,
            "link=l&username=alice&min=100&max=100&posts=10&old_posts=0&delay=30&expiry=31%2F12%2F2030&quantity=5",
        );
        assert_eq!(
            f,
            OrderFields {
                username: Some("alice".into()),
                min: Some(100),
                max: Some(100),
                posts: Some(10),
                old_posts: Some(0),
                delay: Some(30),
                expiry: Some("31/12/2030".into()),
                ..Default::default()
            }
        );
        assert_eq!(
            form_of(&f),
            pairs(&[
                ("username", "alice"),
                ("min", "100"),
                ("max", "100"),
                ("posts", "10"),
                ("old_posts", "0"),
                ("delay", "30"),
                ("expiry", "31/12/2030"),
            ])
        );

        for delay in DELAYS {
            let f = ok(
                &T::Subscriptions,
                &format!("username=u&min=1&max=2&delay={delay}"),
            );
            assert_eq!(f.delay, Some(delay));
        }
        for bad in ["1", "45", "601", "660", "-5", "x", "30.0"] {
            assert_eq!(
                parse(
                    &T::Subscriptions,
                    &format!("username=u&min=1&max=2&delay={bad}")
                ),
                Err(ProtocolError::Invalid("delay")),
                "{bad}"
            );
        }
        for good in [
            "1/1/2030",
            "01/01/2030",
            "29/02/2028",
            "31/01/2030",
            "30/04/2030",
        ] {
            let f = ok(
                &T::Subscriptions,
                &format!("username=u&min=1&max=2&expiry={good}"),
            );
            assert_eq!(f.expiry.as_deref(), Some(good));
        }
        for bad in [
            "2030-12-31",
            "12/31/2030",
            "31/12/30",
            "0/1/2030",
            "1/0/2030",
            "32/1/2030",
            "001/1/2030",
            "1/1/1999",
            "1/1/2030/1",
            "a/b/cdef",
            "31/04/2030",
            "30/02/2028",
            "29/02/2030",
            "29/02/2100",
        ] {
            assert_eq!(
                parse(
                    &T::Subscriptions,
                    &format!("username=u&min=1&max=2&expiry={bad}")
                ),
                Err(ProtocolError::Invalid("expiry")),
                "{bad}"
            );
        }
        assert_eq!(
            parse(&T::Subscriptions, "min=1&max=2"),
            Err(ProtocolError::Missing("username"))
        );
        assert_eq!(
            parse(&T::Subscriptions, "username=u&max=2"),
            Err(ProtocolError::Missing("min"))
        );
        assert_eq!(
            parse(&T::Subscriptions, "username=u&min=2"),
            Err(ProtocolError::Missing("max"))
        );
        assert_eq!(
            parse(&T::Subscriptions, "username=u&min=0&max=2"),
            Err(ProtocolError::Invalid("min"))
        );
        assert_eq!(
            parse(&T::Subscriptions, "username=u&min=1&max=x"),
            Err(ProtocolError::Invalid("max"))
        );
        assert_eq!(
            parse(&T::Subscriptions, "username=u&min=3&max=2"),
            Err(ProtocolError::Invalid("min: it is above max"))
        );
        assert_eq!(
            parse(&T::Subscriptions, "username=u&min=1&max=2&posts=-1"),
            Err(ProtocolError::Invalid("posts"))
        );
        assert_eq!(
            parse(&T::Subscriptions, "username=u&min=1&max=2&old_posts=many"),
            Err(ProtocolError::Invalid("old_posts"))
        );
    }

    #[test]
    fn unknown_types_are_not_ordered() {
        assert_eq!(
            parse(&T::Other("Drip".into()), "link=l&quantity=100"),
            Err(ProtocolError::IncorrectServiceId)
        );
    }

    #[test]
    fn link_and_quantity_are_required_where_the_type_takes_them() {
        let with_quantity = [
            T::Default,
            T::Mentions,
            T::MentionsWithHashtags,
            T::MentionsHashtag,
            T::MentionsUserFollowers,
            T::MentionsMediaLikers,
            T::CommentLikes,
            T::Poll,
            T::InvitesFromGroups,
            T::WebTraffic,
        ];
        for kind in ServiceType::ALL {
            if kind != T::Subscriptions {
                for body in [
                    "quantity=100",
                    "link=&quantity=100",
                    "link=undefined",
                    "link=+",
                ] {
                    assert_eq!(
                        parse(&kind, body),
                        Err(ProtocolError::Missing("link")),
                        "{kind:?} {body}"
                    );
                }
            }
            if with_quantity.contains(&kind) {
                assert_eq!(
                    parse(&kind, "link=l"),
                    Err(ProtocolError::Missing("quantity")),
                    "{kind:?}"
                );
                assert_eq!(
                    parse(&kind, "link=l&quantity=undefined"),
                    Err(ProtocolError::Missing("quantity")),
                    "{kind:?}"
                );
            }
        }
    }

    #[test]
    fn bad_quantities() {
        for bad in [
            "0",
            "-1",
            "1.5",
            "abc",
            "1e3",
            "%2B5",
            "0x10",
            "1%2C000",
            "18446744073709551616",
        ] {
            assert_eq!(
                parse(&T::Default, &format!("link=l&quantity={bad}")),
                Err(ProtocolError::Invalid("quantity")),
                "{bad}"
            );
        }
        assert_eq!(
            parse(&T::Default, "link=l&quantity[]=5"),
            Err(ProtocolError::Invalid("quantity"))
        );
        // Padding is trimmed; leading zeros are still the number.
        assert_eq!(ok(&T::Default, "link=l&quantity=+100+").quantity, Some(100));
        assert_eq!(ok(&T::Default, "link=l&quantity=0100").quantity, Some(100));
        // JSON numbers and strings alike.
        for body in [
            &br#"{"link":"l","quantity":100}"#[..],
            br#"{"link":"l","quantity":"100"}"#,
        ] {
            let p = Params::parse_json(body).unwrap();
            assert_eq!(
                OrderFields::parse(&T::Default, &p).unwrap().quantity,
                Some(100)
            );
        }
        for body in [
            &br#"{"link":"l","quantity":1.5}"#[..],
            br#"{"link":"l","quantity":-1}"#,
            br#"{"link":"l","quantity":true}"#,
        ] {
            let p = Params::parse_json(body).unwrap();
            let r = OrderFields::parse(&T::Default, &p);
            // `true` reads as 1, which is a quantity; the others are not.
            if body.ends_with(b"true}") {
                assert_eq!(r.map(|f| f.quantity), Ok(Some(1)));
            } else {
                assert_eq!(r, Err(ProtocolError::Invalid("quantity")));
            }
        }
    }

    #[test]
    fn lines_split_on_lf_and_crlf_and_drop_blanks() {
        assert_eq!(split_lines("a\nb\r\nc"), ["a", "b", "c"]);
        assert_eq!(split_lines("\r\n\r\na\r\n\r\n"), ["a"]);
        assert_eq!(split_lines("  a  \n\t\n b"), ["a", "b"]);
        assert_eq!(split_lines(""), Vec::<String>::new());
        assert_eq!(split_lines("\n\r\n \n"), Vec::<String>::new());
        // A lone CR is not a line break.
        assert_eq!(split_lines("a\rb"), ["a\rb"]);
    }

    #[test]
    fn limits() {
        let f = ok(&T::Default, "link=l&quantity=49");
        assert_eq!(
            f.check_limits(&T::Default, 50, 10000, true),
            Err(ProtocolError::QuantityBelowMin(50))
        );
        assert_eq!(
            ProtocolError::QuantityBelowMin(50).to_string(),
            "Quantity less than minimal 50"
        );
        let f = ok(&T::Default, "link=l&quantity=10001");
        assert_eq!(
            f.check_limits(&T::Default, 50, 10000, true),
            Err(ProtocolError::QuantityAboveMax(10000))
        );
        assert_eq!(
            ProtocolError::QuantityAboveMax(10000).to_string(),
            "Quantity more than maximum 10000"
        );
        for q in [50, 10000] {
            let f = ok(&T::Default, &format!("link=l&quantity={q}"));
            assert_eq!(f.check_limits(&T::Default, 50, 10000, false), Ok(()));
        }

        // Drip-feed: allowed only where the service offers it; limits apply per run.
        let f = ok(&T::Default, "link=l&quantity=5000&runs=10&interval=5");
        assert_eq!(
            f.check_limits(&T::Default, 50, 10000, false),
            Err(ProtocolError::DripfeedDisabled)
        );
        assert_eq!(
            ProtocolError::DripfeedDisabled.to_string(),
            "Drip-feed is disabled for this service"
        );
        assert_eq!(f.check_limits(&T::Default, 50, 10000, true), Ok(()));
        // The drip-feed refusal comes before the quantity check.
        let f = ok(&T::Default, "link=l&quantity=1&runs=10&interval=5");
        assert_eq!(
            f.check_limits(&T::Default, 50, 10000, false),
            Err(ProtocolError::DripfeedDisabled)
        );

        // Lines are what is limited for comment lists.
        let f = ok(&T::CustomComments, "link=l&comments=a%0Ab%0Ac");
        assert_eq!(
            f.check_limits(&T::CustomComments, 5, 100, false),
            Err(ProtocolError::QuantityBelowMin(5))
        );
        assert_eq!(f.check_limits(&T::CustomComments, 3, 3, false), Ok(()));
        assert_eq!(
            f.check_limits(&T::CustomComments, 1, 2, false),
            Err(ProtocolError::QuantityAboveMax(2))
        );
        let f = ok(&T::MentionsCustomList, "link=l&usernames=a%0Ab%0Ac");
        assert_eq!(
            f.check_limits(&T::MentionsCustomList, 10, 100, false),
            Err(ProtocolError::QuantityBelowMin(10))
        );
        // Packages have no quantity to limit.
        let f = ok(&T::CustomCommentsPackage, "link=l&comments=a");
        assert_eq!(
            f.check_limits(&T::CustomCommentsPackage, 10, 100, false),
            Ok(())
        );

        // Subscriptions: both ends of the per-post range must be within the service's.
        let sub = |min: u64, max: u64| {
            ok(
                &T::Subscriptions,
                &format!("username=u&min={min}&max={max}"),
            )
        };
        assert_eq!(
            sub(50, 10000).check_limits(&T::Subscriptions, 50, 10000, false),
            Ok(())
        );
        assert_eq!(
            sub(100, 20000).check_limits(&T::Subscriptions, 50, 10000, false),
            Err(ProtocolError::QuantityAboveMax(10000))
        );
        assert_eq!(
            sub(10, 20).check_limits(&T::Subscriptions, 50, 10000, false),
            Err(ProtocolError::QuantityBelowMin(50))
        );
        assert_eq!(
            sub(1, 100).check_limits(&T::Subscriptions, 50, 10000, false),
            Err(ProtocolError::QuantityBelowMin(50))
        );
    }

    #[test]
    fn to_form_forwards_exactly_what_parse_read() {
        // Every type's form parses back, under the same type, to the same fields.
        let bodies: [(ServiceType, &str); 16] = [
            (T::Default, "link=l&quantity=10&runs=2&interval=3"),
            (T::Package, "link=l"),
            (T::CustomComments, "link=l&comments=a%0D%0Ab"),
            (T::CustomCommentsPackage, "link=l&comments=a%0Ab"),
            (T::Mentions, "link=l&quantity=1&usernames=a%0Ab"),
            (
                T::MentionsWithHashtags,
                "link=l&quantity=1&usernames=a&hashtags=%23b",
            ),
            (T::MentionsCustomList, "link=l&usernames=a%0Ab"),
            (T::MentionsHashtag, "link=l&quantity=1&hashtag=h"),
            (T::MentionsUserFollowers, "link=l&quantity=1&username=u"),
            (T::MentionsMediaLikers, "link=l&quantity=1&media=m"),
            (T::CommentLikes, "link=l&quantity=1&username=u"),
            (T::CommentReplies, "link=l&username=u&comments=c"),
            (T::Poll, "link=l&quantity=1&answer_number=3"),
            (T::InvitesFromGroups, "link=l&quantity=1&groups=g%0Ah"),
            (
                T::WebTraffic,
                "link=l&quantity=1&country=DE&device=2&type_of_traffic=2&referring_url=r",
            ),
            (
                T::Subscriptions,
                "username=u&min=1&max=2&posts=3&old_posts=4&delay=600&expiry=1%2F2%2F2030",
            ),
        ];
        for (kind, body) in bodies {
            let f = ok(&kind, body);
            let mut p = Params::default();
            for (name, value) in f.to_form() {
                assert!(!p.contains(name), "{kind:?}: {name} twice");
                p.insert(name, value);
            }
            assert_eq!(OrderFields::parse(&kind, &p), Ok(f.clone()), "{kind:?}");
            // Exactly the parameters of the request, nothing more.
            let sent: Vec<&str> = body
                .split('&')
                .map(|kv| kv.split('=').next().unwrap())
                .collect();
            let forwarded: Vec<&str> = f.to_form().iter().map(|(k, _)| *k).collect();
            let mut a = sent.clone();
            let mut b = forwarded.clone();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "{kind:?}");
        }
    }
}
