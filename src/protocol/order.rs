//! The fields of an `add` request for each service type (PROTOCOL.md §3), what each bills,
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
    if items.is_empty() {
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
    ok(d, 1..=2, 1..=31) && ok(m, 1..=2, 1..=12) && ok(y, 4..=4, 2000..=9999)
}
