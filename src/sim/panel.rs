//! The simulated panel's books: its account balance, its orders and refills, and how they
//! progress in (simulated) time. Pure state, driven by an explicit clock reading, so every
//! rule is testable without sockets or sleeping.

use std::collections::{BTreeSet, HashMap};

use rust_decimal::Decimal;

use super::amounts;
use super::faults::{Chance, mix};
use crate::money::{self, Billing};
use crate::protocol::order::{Drip, OrderFields};
use crate::protocol::reply::{OrderStatus, Remains};
use crate::protocol::{Params, ProtocolError, RefillStatus, Service, Status};

/// Simulated milliseconds since the simulator started.
pub type Millis = u64;

/// How an order will end, decided when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Complete,
    /// Delivers only this many units, then stops as Partial.
    Partial(u64),
    /// The panel cancels it before it starts.
    Cancel,
    /// Starts, delivers half, and waits until someone cancels it.
    Hold,
    /// Never starts: Pending until someone cancels it (panels that sit on orders).
    Pending,
}

/// Shares of orders that end Partial or Canceled on their own.
#[derive(Debug, Clone, Copy)]
pub struct Shares {
    pub partial: Chance,
    pub cancel: Chance,
}

#[derive(Debug, Clone)]
struct Order {
    service: u64,
    charge: Decimal,
    refunded: Decimal,
    /// Units delivered in all (quantity × runs, or lines; 1 for a package).
    total: u64,
    start_at: Millis,
    /// Time to deliver `total` units once started.
    duration: Millis,
    fate: Fate,
    /// Set when a customer cancels: when, and how much had been delivered.
    stopped: Option<(Millis, u64)>,
    start_count: u64,
    settled: bool,
    /// Billed as one unit: delivered in thousandths, `remains` 1 until Completed, and a
    /// Partial refunds the undelivered share of the charge.
    package: bool,
    /// How the panel reports and refunds, as the link's markers chose (see [`Quirks`]).
    quirks: Quirks,
    /// Drip-feed runs and interval: `total` is the per-run quantity × runs.
    drip: Option<Drip>,
}

/// Ways real panels report and refund that tests ask for through markers in the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quirks {
    /// `sim-refund=N`: a Partial gives back only N % of the undelivered share.
    refund_percent: u64,
    /// `sim-charge=none`: the panel does not track charges and reports `charge` 0.
    no_charge: bool,
    /// `sim-remains=unknown`: `remains` is always `"Unknown"`.
    no_remains: bool,
    /// `sim-runs=none`: a drip-feed order's status carries no `runs` (many panels omit it).
    no_runs: bool,
    /// `sim-delivered=N`: a Partial stops after N units (otherwise a seeded 20–80 %).
    delivered: Option<u64>,
}

impl Quirks {
    fn from_link(link: Option<&str>) -> Quirks {
        Quirks {
            refund_percent: marker(link, "sim-refund=")
                .and_then(|m| m.parse().ok())
                .map_or(100, |p: u64| p.min(100)),
            no_charge: marker(link, "sim-charge=") == Some("none"),
            no_remains: marker(link, "sim-remains=") == Some("unknown"),
            no_runs: marker(link, "sim-runs=") == Some("none"),
            delivered: marker(link, "sim-delivered=").and_then(|m| m.parse().ok()),
        }
    }
}

/// The word after `name` in `link` (`sim-fate=partial&…` → `partial`).
fn marker<'a>(link: Option<&'a str>, name: &str) -> Option<&'a str> {
    let rest = link?.split(name).nth(1)?;
    rest.split(|c: char| !c.is_ascii_alphanumeric()).next()
}

/// Thousandths a package is delivered in, so that it can end Partial part-way.
const PACKAGE_PARTS: u64 = 1000;

impl Order {
    /// Status and units delivered at `now`, and when (if ever) the order becomes final.
    fn progress(&self, now: Millis) -> (Status, u64) {
        if let Some((at, delivered)) = self.stopped
            && now >= at
        {
            return (
                if delivered == 0 {
                    Status::Canceled
                } else {
                    Status::Partial
                },
                delivered,
            );
        }
        if now < self.start_at || self.fate == Fate::Pending {
            return (Status::Pending, 0);
        }
        let target = match self.fate {
            Fate::Cancel => return (Status::Canceled, 0),
            Fate::Hold => return (Status::InProgress, self.total / 2),
            Fate::Pending => return (Status::Pending, 0),
            Fate::Complete => self.total,
            Fate::Partial(units) => units,
        };
        let elapsed = now - self.start_at;
        let delivered = (u128::from(self.total) * u128::from(elapsed) / u128::from(self.duration))
            .min(u128::from(target)) as u64;
        if delivered < target {
            (Status::InProgress, delivered)
        } else if target < self.total {
            (Status::Partial, target)
        } else {
            (Status::Completed, target)
        }
    }

    /// When the order turns final on its own, if it does.
    fn final_at(&self) -> Option<Millis> {
        let target = match self.fate {
            Fate::Cancel => return Some(self.start_at),
            Fate::Hold | Fate::Pending => return None,
            Fate::Complete => self.total,
            Fate::Partial(units) => units,
        };
        let ms = u128::from(self.duration) * u128::from(target);
        Some(self.start_at + ms.div_ceil(u128::from(self.total)) as u64)
    }
}

#[derive(Debug, Clone)]
struct Refill {
    order: u64,
    start_at: Millis,
    done_at: Millis,
    rejected: bool,
}

impl Refill {
    fn status(&self, now: Millis) -> RefillStatus {
        if now < self.start_at {
            RefillStatus::Pending
        } else if now < self.done_at {
            RefillStatus::InProgress
        } else if self.rejected {
            RefillStatus::Rejected
        } else {
            RefillStatus::Completed
        }
    }
}

/// What the journal records of a created order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Created {
    pub order: u64,
    pub service: u64,
    pub link: Option<String>,
    pub quantity: u64,
    #[serde(serialize_with = "money_text")]
    pub charge: Decimal,
    pub at_ms: Millis,
}

fn money_text<S: serde::Serializer>(v: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&money::format(*v))
}

pub struct Panel {
    seed: u64,
    shares: Shares,
    pub currency: String,
    pub balance: Decimal,
    services: HashMap<u64, Service>,
    orders: HashMap<u64, Order>,
    next_order: u64,
    refills: HashMap<u64, Refill>,
    next_refill: u64,
    /// Orders that will turn final on their own, by when: refunds are applied as time passes.
    unsettled: BTreeSet<(Millis, u64)>,
}

impl Panel {
    pub fn new(
        seed: u64,
        services: &[Service],
        balance: Decimal,
        currency: String,
        shares: Shares,
        first_order_id: u64,
    ) -> Panel {
        Panel {
            seed,
            shares,
            currency,
            balance,
            services: services.iter().map(|s| (s.service, s.clone())).collect(),
            orders: HashMap::new(),
            next_order: first_order_id.max(1),
            refills: HashMap::new(),
            next_refill: first_order_id.max(1),
            unsettled: BTreeSet::new(),
        }
    }

    pub fn order_count(&self) -> usize {
        self.orders.len()
    }

    pub fn refill_count(&self) -> usize {
        self.refills.len()
    }

    /// A seeded number for (order id, purpose), independent of request interleaving.
    fn draw(&self, id: u64, purpose: u64) -> u64 {
        mix(self.seed ^ mix(id.wrapping_mul(31).wrapping_add(purpose)))
    }

    /// Applies the refunds of orders that have turned final by `now`.
    pub fn settle_due(&mut self, now: Millis) {
        while let Some(&(at, id)) = self.unsettled.first() {
            if at > now {
                break;
            }
            self.unsettled.pop_first();
            self.settle(id, now);
        }
    }

    fn settle(&mut self, id: u64, now: Millis) {
        let Some(order) = self.orders.get_mut(&id) else {
            return;
        };
        if order.settled {
            return;
        }
        let (status, delivered) = order.progress(now);
        let refund = match status {
            Status::Canceled => order.charge,
            Status::Partial => amounts::refund(
                order.charge,
                order.total,
                order.total - delivered,
                order.quirks.refund_percent,
            ),
            _ => return,
        };
        order.settled = true;
        order.refunded = refund;
        self.balance += refund;
    }

    pub fn add(
        &mut self,
        service_id: u64,
        params: &Params,
        now: Millis,
    ) -> Result<Created, ProtocolError> {
        let service = self
            .services
            .get(&service_id)
            .ok_or(ProtocolError::IncorrectServiceId)?;
        let fields = OrderFields::parse(&service.kind, params)?;
        fields.check_limits(&service.kind, service.min, service.max, service.dripfeed)?;
        let billing = fields.billing(&service.kind);
        // Too large to compute is more than any balance.
        let charge = amounts::charge(service.rate, billing).ok_or(ProtocolError::NotEnoughFunds)?;
        if charge > self.balance {
            return Err(ProtocolError::NotEnoughFunds);
        }
        let package = billing == Billing::Package;
        let total = match billing {
            Billing::PerThousand(units) => units.max(1),
            Billing::Package => PACKAGE_PARTS,
            Billing::PerPost => fields.posts.unwrap_or(1).max(1),
        };
        let id = self.next_order;
        self.next_order += 1;
        let quirks = Quirks::from_link(fields.link.as_deref());
        let fate = self.fate(id, total, package, fields.link.as_deref(), quirks);
        // Start within 5–60 s; deliver 10–50 units a second, or over the drip-feed schedule.
        let start_at = now + 5_000 + self.draw(id, 1) % 55_000;
        let pace = 10 + self.draw(id, 2) % 41;
        let drip_ms = fields.drip.map_or(0, |d| {
            (d.runs - 1)
                .saturating_mul(d.interval)
                .saturating_mul(60_000)
        });
        // A package takes as long as one unit would (its thousandths are a bookkeeping aid).
        let units = if package { 1 } else { total };
        let duration = (units.saturating_mul(1000) / pace).max(drip_ms).max(1_000);
        let order = Order {
            service: service_id,
            charge,
            refunded: Decimal::ZERO,
            total,
            start_at,
            duration,
            fate,
            stopped: None,
            start_count: self.draw(id, 3) % 20_000,
            settled: false,
            package,
            quirks,
            drip: fields.drip,
        };
        if let Some(at) = order.final_at() {
            self.unsettled.insert((at, id));
        }
        self.orders.insert(id, order);
        self.balance -= charge;
        Ok(Created {
            order: id,
            service: service_id,
            link: fields.link,
            quantity: units,
            charge,
            at_ms: now,
        })
    }

    /// A link containing `sim-fate=partial|cancel|complete|hold|pending` chooses the fate, so
    /// tests can ask for the case they cover; otherwise the seeded shares decide (packages end
    /// Partial only when asked to).
    fn fate(&self, id: u64, total: u64, package: bool, link: Option<&str>, q: Quirks) -> Fate {
        let partial_units = || {
            let share = 200 + self.draw(id, 5) % 600; // 20–80 % delivered
            let units = q.delivered.unwrap_or(total * share / 1000);
            units.clamp(1, total.saturating_sub(1).max(1))
        };
        match marker(link, "sim-fate=") {
            Some("complete") => Fate::Complete,
            Some("cancel") => Fate::Cancel,
            Some("hold") => Fate::Hold,
            Some("pending") => Fate::Pending,
            Some("partial") if total >= 2 => Fate::Partial(partial_units()),
            _ => {
                let draw = self.draw(id, 4);
                if self.shares.cancel.hits(draw) {
                    Fate::Cancel
                } else if !package && total >= 10 && self.shares.partial.hits(draw >> 20) {
                    Fate::Partial(partial_units())
                } else {
                    Fate::Complete
                }
            }
        }
    }

    pub fn status(&self, id: u64, now: Millis) -> Result<OrderStatus, ProtocolError> {
        let order = self
            .orders
            .get(&id)
            .ok_or(ProtocolError::IncorrectOrderId)?;
        let (status, delivered) = order.progress(now);
        let remains = match (order.package, status) {
            _ if order.quirks.no_remains => Remains::Unknown,
            (true, Status::Completed) => Remains::Count(0),
            (true, _) => Remains::Count(1),
            (false, _) => Remains::Count((order.total - delivered) as i64),
        };
        Ok(OrderStatus {
            charge: match order.quirks.no_charge {
                true => Decimal::ZERO,
                false => order.charge - order.refunded,
            },
            start_count: if status == Status::Pending {
                0
            } else {
                order.start_count
            },
            status,
            remains,
            currency: self.currency.clone(),
            // Runs done as whole runs of what was delivered, as panels count them.
            runs: order
                .drip
                .filter(|_| !order.quirks.no_runs)
                .map(|d| d.runs_done(order.total, (order.total - delivered) as i64)),
            interval: order.drip.map(|d| d.interval),
            orders: Vec::new(),
        })
    }

    pub fn refill(&mut self, id: u64, now: Millis) -> Result<u64, ProtocolError> {
        let order = self
            .orders
            .get(&id)
            .ok_or(ProtocolError::IncorrectOrderId)?;
        let refillable = self.services.get(&order.service).is_some_and(|s| s.refill);
        if !refillable {
            return Err(ProtocolError::RefillDisabled);
        }
        let (status, _) = order.progress(now);
        if !matches!(status, Status::Completed | Status::Partial) {
            return Err(ProtocolError::OrderNotCompleted);
        }
        let running = self
            .refills
            .values()
            .any(|r| r.order == id && !r.status(now).is_final());
        if running {
            return Err(ProtocolError::RefillNotCompleted);
        }
        let refill = self.next_refill;
        self.next_refill += 1;
        let start_at = now + 2_000 + self.draw(refill, 11) % 30_000;
        self.refills.insert(
            refill,
            Refill {
                order: id,
                start_at,
                done_at: start_at + 10_000 + self.draw(refill, 12) % 60_000,
                rejected: self.draw(refill, 13).is_multiple_of(10),
            },
        );
        Ok(refill)
    }

    pub fn refill_status(&self, id: u64, now: Millis) -> Result<RefillStatus, ProtocolError> {
        self.refills
            .get(&id)
            .map(|r| r.status(now))
            .ok_or(ProtocolError::RefillNotFound)
    }

    /// Cancels an unfinished order: Canceled (full refund) if nothing was delivered yet,
    /// Partial (refund of the rest) otherwise.
    pub fn cancel(&mut self, id: u64, now: Millis) -> Result<(), ProtocolError> {
        let order = self
            .orders
            .get_mut(&id)
            .ok_or(ProtocolError::IncorrectOrderId)?;
        let cancellable = self.services.get(&order.service).is_some_and(|s| s.cancel);
        if !cancellable {
            return Err(ProtocolError::CancelDisabled);
        }
        let (status, delivered) = order.progress(now);
        if status.is_final() {
            return Err(ProtocolError::CancelNotAllowed);
        }
        if let Some(at) = order.final_at() {
            self.unsettled.remove(&(at, id));
        }
        order.stopped = Some((now, delivered));
        self.settle(id, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::catalog;

    fn panel(balance: &str) -> Panel {
        Panel::new(
            7,
            &catalog::builtin(),
            balance.parse().unwrap(),
            "USD".into(),
            Shares {
                partial: Chance::NEVER,
                cancel: Chance::NEVER,
            },
            1,
        )
    }

    fn form(s: &str) -> Params {
        Params::parse_form(s.as_bytes()).unwrap()
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    const HOUR: Millis = 3_600_000;

    #[test]
    fn an_order_is_charged_progresses_and_completes() {
        let mut p = panel("10");
        let c = p
            .add(101, &form("link=https://x/a&quantity=1000"), 0)
            .unwrap();
        assert_eq!(c.charge, d("0.9"));
        assert_eq!(p.balance, d("9.1"));
        let s = p.status(c.order, 0).unwrap();
        assert_eq!(
            (s.status, s.remains, s.start_count),
            (Status::Pending, Remains::Count(1000), 0)
        );
        let s = p.status(c.order, HOUR).unwrap();
        assert_eq!(
            (s.status, s.remains),
            (Status::Completed, Remains::Count(0))
        );
        assert_eq!(s.charge, d("0.9"));
        assert_eq!(s.start_count, p.draw(c.order, 3) % 20_000);
    }

    #[test]
    fn partial_refunds_the_rest_once() {
        let mut p = panel("10");
        let c = p
            .add(101, &form("link=x?sim-fate=partial&quantity=1000"), 0)
            .unwrap();
        p.settle_due(HOUR);
        p.settle_due(2 * HOUR);
        let s = p.status(c.order, HOUR).unwrap();
        assert_eq!(s.status, Status::Partial);
        let Remains::Count(remains) = s.remains else {
            panic!()
        };
        // 0.90 for 1000 units: 0.00090 (90 units of 0.00001) per undelivered one.
        let refund = Decimal::new(90 * remains, 5);
        assert!(refund > Decimal::ZERO);
        assert_eq!(s.charge, d("0.9") - refund);
        assert_eq!(p.balance, d("9.1") + refund);
    }

    #[test]
    fn a_package_ends_partial_with_its_charge_cut_to_what_was_delivered() {
        let mut p = panel("10");
        let c = p.add(119, &form("link=x?sim-fate=partial"), 0).unwrap();
        assert_eq!((c.charge, c.quantity), (d("3"), 1));
        let s = p.status(c.order, 0).unwrap();
        assert_eq!(
            (s.status, s.remains, s.charge),
            (Status::Pending, Remains::Count(1), d("3"))
        );
        p.settle_due(HOUR);
        let s = p.status(c.order, HOUR).unwrap();
        assert_eq!((s.status, s.remains), (Status::Partial, Remains::Count(1)));
        assert!(
            s.charge > Decimal::ZERO && s.charge < d("3"),
            "{}",
            s.charge
        );
        assert_eq!(p.balance, d("7") + (d("3") - s.charge));
        // Without a marker a package completes, and reports nothing left.
        let c = p.add(119, &form("link=y"), 0).unwrap();
        let s = p.status(c.order, HOUR).unwrap();
        assert_eq!(
            (s.status, s.remains),
            (Status::Completed, Remains::Count(0))
        );
    }

    #[test]
    fn markers_choose_how_the_panel_reports_and_refunds() {
        let mut p = panel("10");
        let q = "link=x?sim-fate=partial%26sim-charge=none%26sim-remains=unknown&quantity=1000";
        let c = p.add(101, &form(q), 0).unwrap();
        p.settle_due(HOUR);
        let s = p.status(c.order, HOUR).unwrap();
        assert_eq!(
            (s.status, s.remains, s.charge),
            (Status::Partial, Remains::Unknown, d("0"))
        );
        // Half of what remains says: the panel keeps the rest.
        let c = p.add(
            101,
            &form("link=y?sim-fate=partial%26sim-refund=50&quantity=1000"),
            0,
        );
        let c = c.unwrap();
        let before = p.balance;
        p.settle_due(HOUR);
        let s = p.status(c.order, HOUR).unwrap();
        let Remains::Count(remains) = s.remains else {
            panic!()
        };
        // Half of 0.00090 per undelivered unit, the half unit dropped.
        assert_eq!(p.balance - before, Decimal::new(90 * remains / 2, 5));
        assert_eq!(s.charge, d("0.9") - (p.balance - before));
    }

    #[test]
    fn cancel_fate_refunds_everything() {
        let mut p = panel("10");
        let c = p
            .add(101, &form("link=x?sim-fate=cancel&quantity=1000"), 0)
            .unwrap();
        p.settle_due(HOUR);
        assert_eq!(p.status(c.order, HOUR).unwrap().status, Status::Canceled);
        assert_eq!(p.balance, d("10"));
    }

    #[test]
    fn customer_cancel_of_a_running_order_is_partial() {
        let mut p = panel("10");
        let c = p
            .add(101, &form("link=x?sim-fate=hold&quantity=1000"), 0)
            .unwrap();
        assert_eq!(p.status(c.order, HOUR).unwrap().status, Status::InProgress);
        p.cancel(c.order, HOUR).unwrap();
        let s = p.status(c.order, HOUR).unwrap();
        assert_eq!(
            (s.status, s.remains),
            (Status::Partial, Remains::Count(500))
        );
        assert_eq!(p.balance, d("9.55"));
        assert_eq!(
            p.cancel(c.order, HOUR),
            Err(ProtocolError::CancelNotAllowed)
        );
        // Pending orders cancel in full.
        let c = p.add(101, &form("link=y&quantity=1000"), HOUR).unwrap();
        p.cancel(c.order, HOUR).unwrap();
        assert_eq!(p.status(c.order, HOUR).unwrap().status, Status::Canceled);
        assert_eq!(p.balance, d("9.55"));
    }

    #[test]
    fn a_pending_fate_stays_pending_until_canceled() {
        let mut p = panel("10");
        let c = p
            .add(101, &form("link=x?sim-fate=pending&quantity=1000"), 0)
            .unwrap();
        p.settle_due(100 * HOUR);
        let s = p.status(c.order, 100 * HOUR).unwrap();
        assert_eq!((s.status, s.start_count), (Status::Pending, 0));
        p.cancel(c.order, 100 * HOUR).unwrap();
        assert_eq!(
            p.status(c.order, 100 * HOUR).unwrap().status,
            Status::Canceled
        );
        assert_eq!(p.balance, d("10"));
    }

    #[test]
    fn limits_funds_and_flags_use_the_real_texts() {
        let mut p = panel("0.5");
        assert_eq!(
            p.add(101, &form("link=x&quantity=10"), 0)
                .unwrap_err()
                .to_string(),
            "Quantity less than minimal 50"
        );
        assert_eq!(
            p.add(101, &form("link=x&quantity=10001"), 0)
                .unwrap_err()
                .to_string(),
            "Quantity more than maximum 10000"
        );
        assert_eq!(
            p.add(101, &form("link=x&quantity=1000"), 0),
            Err(ProtocolError::NotEnoughFunds)
        );
        assert_eq!(
            p.add(999, &form("link=x&quantity=1000"), 0),
            Err(ProtocolError::IncorrectServiceId)
        );
        assert_eq!(
            p.add(118, &form("link=x&quantity=100&runs=2&interval=5"), 0),
            Err(ProtocolError::DripfeedDisabled)
        );
        assert_eq!(p.balance, d("0.5"));
        let c = p.add(117, &form("link=x&quantity=100"), 0).unwrap();
        assert_eq!(p.cancel(c.order, 0), Err(ProtocolError::CancelDisabled));
        assert_eq!(p.refill(c.order, 0), Err(ProtocolError::OrderNotCompleted));
        let c2 = p.add(102, &form("link=x&quantity=100"), 0).unwrap();
        assert_eq!(p.refill(c2.order, HOUR), Err(ProtocolError::RefillDisabled));
    }

    #[test]
    fn refills_progress_and_one_runs_at_a_time() {
        let mut p = panel("10");
        let c = p
            .add(101, &form("link=x?sim-fate=complete&quantity=100"), 0)
            .unwrap();
        let r = p.refill(c.order, HOUR).unwrap();
        assert_eq!(p.refill_status(r, HOUR).unwrap(), RefillStatus::Pending);
        assert_eq!(
            p.refill(c.order, HOUR),
            Err(ProtocolError::RefillNotCompleted)
        );
        let done = p.refill_status(r, 2 * HOUR).unwrap();
        assert!(matches!(
            done,
            RefillStatus::Completed | RefillStatus::Rejected
        ));
        assert!(p.refill(c.order, 2 * HOUR).is_ok());
        assert_eq!(p.refill_status(999, 0), Err(ProtocolError::RefillNotFound));
    }

    #[test]
    fn drip_feed_bills_every_run_and_takes_its_schedule() {
        let mut p = panel("10");
        let c = p
            .add(101, &form("link=x&quantity=100&runs=5&interval=30"), 0)
            .unwrap();
        assert_eq!(c.charge, d("0.45"));
        assert_eq!(c.quantity, 500);
        assert_eq!(p.status(c.order, HOUR).unwrap().status, Status::InProgress);
        assert_eq!(
            p.status(c.order, 3 * HOUR).unwrap().status,
            Status::Completed
        );
    }

    #[test]
    fn same_seed_same_fates() {
        let mut a = panel("1000");
        let mut b = panel("1000");
        for i in 0..50 {
            let q = format!("link=l{i}&quantity=1000");
            let x = a.add(101, &form(&q), 0).unwrap();
            let y = b.add(101, &form(&q), 0).unwrap();
            assert_eq!(a.status(x.order, HOUR), b.status(y.order, HOUR));
        }
    }
}
