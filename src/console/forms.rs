//! The console's writes: each form's fields are read by the admin API's rules (the same
//! refusals, in the same words) and applied through [`Operator`] as the session's token, so
//! that the audit trail names it.

use rust_decimal::Decimal;

use super::paths::Write;
use crate::admin_api::routes::RESOLVE_EITHER;
use crate::admin_api::shapes::amount;
use crate::admin_api::{ApiError, input};
use crate::gateway::Gateway;
use crate::money;
use crate::operator::Operator;

/// A submitted form's fields, in order.
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Result<Form, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError::bad_request(format!("form: {e}")))?;
        // PostgreSQL cannot store NUL, so the API refuses it everywhere; so does the console.
        if pairs
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(ApiError::bad_request("form: text must not contain NUL"));
        }
        Ok(Form(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field left empty counts as not given, as an absent JSON field does in the API.
    pub fn given(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.trim().is_empty())
    }
}

/// What a write did.
pub enum Done {
    /// Back to the write's page, with this message.
    Redirect(String),
    /// The customer's page with their new key. A key is shown in the reply to the write itself,
    /// never carried through a redirect: it is stored nowhere, not even for a moment.
    NewKey {
        name: String,
        key: String,
        message: String,
    },
}

/// Applies `write` with `form`'s fields as `actor`.
pub async fn apply(
    gw: &Gateway,
    actor: &str,
    write: &Write,
    form: &Form,
) -> Result<Done, ApiError> {
    let op = Operator {
        store: gw.store.as_ref(),
        cfg: &gw.cfg,
        actor,
    };
    match write {
        Write::CreateCustomer => create(&op, form).await,
        Write::Customer(name, "credit") => adjust(&op, name, form, false).await,
        Write::Customer(name, "debit") => adjust(&op, name, form, true).await,
        Write::Customer(name, part @ ("disable" | "enable")) => {
            let enabled = *part == "enable";
            op.set_enabled(name, enabled).await?;
            Ok(Done::Redirect(format!("{name} is {part}d.")))
        }
        Write::Customer(name, "rotate-key") => {
            let key = op.rotate_key(name).await?;
            Ok(Done::NewKey {
                name: name.clone(),
                key,
                message: format!("{name} has a new key; the old one no longer works."),
            })
        }
        Write::Customer(name, "group") => {
            let group = form.get("group").unwrap_or("").trim();
            op.set_group(name, group).await?;
            Ok(Done::Redirect(format!("{name} is now in group {group}.")))
        }
        Write::Customer(name, _) => {
            let text = form.get("credit_limit").unwrap_or("");
            let limit = input::money(text, "credit_limit")?;
            let c = op.set_credit_limit(name, limit).await?;
            let limit = amount(c.credit_limit);
            Ok(Done::Redirect(format!(
                "{name}'s credit limit is now {limit}."
            )))
        }
        Write::Resolve(id) => resolve(&op, *id, form).await,
        Write::Settle(id) => {
            let refund = input::money(form.get("refund").unwrap_or(""), "refund")?;
            let note = form.get("note").unwrap_or("");
            Ok(Done::Redirect(op.settle(*id, refund, note).await?))
        }
    }
}

async fn create(op: &Operator<'_>, form: &Form) -> Result<Done, ApiError> {
    let name = form.get("name").unwrap_or("");
    let money = |field: &str| {
        form.given(field)
            .map_or(Ok(Decimal::ZERO), |t| input::money(t, field))
    };
    let balance = money("balance")?;
    let credit_limit = money("credit_limit")?;
    let group = form
        .given("group")
        .map_or(crate::config::DEFAULT_GROUP, str::trim);
    let (customer, key) = op.add_client(name, balance, group, credit_limit).await?;
    Ok(Done::NewKey {
        message: format!("Customer {} created.", customer.name),
        name: customer.name,
        key,
    })
}

async fn adjust(op: &Operator<'_>, name: &str, form: &Form, debit: bool) -> Result<Done, ApiError> {
    let given = input::positive(form.get("amount").unwrap_or(""), "amount")?;
    let signed = if debit { -given } else { given };
    let done = op.adjust(name, signed, form.given("note"), None).await?;
    let (verb, given) = (
        if debit { "Debited" } else { "Credited" },
        money::format(given),
    );
    let balance = amount(done.balance);
    Ok(Done::Redirect(format!(
        "{verb} {given} ({name}): the balance is {balance}."
    )))
}

/// One of the API's three resolutions, and only one: placed as an upstream order, not
/// placed, or ended with the final status the upstream's own panel shows.
async fn resolve(op: &Operator<'_>, id: i64, form: &Form) -> Result<Done, ApiError> {
    let upstream_order = form.given("upstream_order").map(str::trim);
    let chosen = (upstream_order, form.get("not_placed"), form.given("status"));
    let message = match chosen {
        (Some(u), None, None) => op.resolve(id, Some(u)).await?,
        (None, Some("true"), None) => op.resolve(id, None).await?,
        (None, None, Some(status)) => {
            let status = input::final_status(status)?;
            let remains = form.given("remains");
            let remains = remains.map(|r| input::count(r.trim(), "remains"));
            op.resolve_ended(id, status, remains.transpose()?).await?
        }
        _ => return Err(ApiError::bad_request(RESOLVE_EITHER)),
    };
    Ok(Done::Redirect(message))
}
