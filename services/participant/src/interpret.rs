//! From commands to the views of a confirmation request: authorization, contract lookups,
//! deterministic contract ids, and the change id that deduplicates a command.
//!
//! Each command becomes one view: its actions, its informees (the stakeholders of every
//! contract it touches and the acting parties) and its confirming parties (the signatories of
//! every contract it touches and the acting parties). Signatories that do not act authorize
//! by confirming through their own participants.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use syncline_protocol::messages::{Action, Archive, Create, View, ViewCommonData};

use crate::error::LedgerError;
use crate::model::{Command, CreateCommand};
use crate::store::StoredContract;

/// SHA-256 over length-prefixed parts, hex.
fn digest(label: &str, parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for part in std::iter::once(label.as_bytes()).chain(parts.iter().copied()) {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of a change id (user, command id, set of acting parties).
pub fn change_hash(user_id: &str, command_id: &str, act_as: &BTreeSet<String>) -> String {
    let mut parts: Vec<&[u8]> = vec![user_id.as_bytes(), command_id.as_bytes()];
    parts.extend(act_as.iter().map(|p| p.as_bytes()));
    digest("syncline.v1.change-id", &parts)
}

/// The id of the contract created by action `action` of view `view` of request `request_uuid`:
/// every participant derives (and checks) the same one.
pub fn contract_id(request_uuid: &str, view: usize, action: usize) -> String {
    digest(
        "syncline.v1.contract-id",
        &[request_uuid.as_bytes(), &(view as u32).to_be_bytes(), &(action as u32).to_be_bytes()],
    )
}

/// A fresh request UUID (lowercase hyphenated, version 4).
pub fn new_uuid() -> String {
    use rand::Rng;
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn set(xs: &[String]) -> BTreeSet<String> {
    xs.iter().cloned().collect()
}

/// The views of `commands` acting as `act_as` (reading also as `read_as`), for request
/// `request_uuid`; `contracts` holds every active contract the commands name.
pub fn views(
    commands: &[Command],
    act_as: &BTreeSet<String>,
    read_as: &BTreeSet<String>,
    request_uuid: &str,
    contracts: &BTreeMap<String, StoredContract>,
) -> Result<Vec<View>, LedgerError> {
    let readers: BTreeSet<String> = act_as.union(read_as).cloned().collect();
    let visible = |id: &str| -> Result<&StoredContract, LedgerError> {
        contracts
            .get(id)
            .filter(|c| c.archived_offset.is_none())
            .filter(|c| c.signatories.iter().chain(&c.observers).any(|p| readers.contains(p)))
            .ok_or_else(|| LedgerError::ContractNotFound { contract_id: id.to_string() })
    };
    let mut views = Vec::with_capacity(commands.len());
    for (i, command) in commands.iter().enumerate() {
        let mut informees = act_as.clone();
        let mut confirming = act_as.clone();
        let mut actions = Vec::new();
        let mut touch = |signatories: &[String], observers: &[String]| {
            informees.extend(signatories.iter().chain(observers).cloned());
            confirming.extend(signatories.iter().cloned());
        };
        match command {
            Command::Create(c) => {
                let field = format!("commands[{i}].create");
                let create = create(&field, c, contract_id(request_uuid, i, 0))?;
                if !create.signatories.iter().any(|s| act_as.contains(s)) {
                    return Err(LedgerError::NotAuthorized {
                        reason: format!("{field}: no signatory of the contract is among the acting parties"),
                    });
                }
                touch(&c.signatories, &c.observers);
                actions.push(Action::Create(create));
            }
            Command::Archive { contract_id: id } => {
                let c = visible(id)?;
                by_signatory(c, act_as, &format!("commands[{i}].archive"))?;
                touch(&c.signatories, &c.observers);
                actions.push(Action::Archive(Archive { contract_id: id.clone() }));
            }
            Command::Exercise(e) => {
                let field = format!("commands[{i}].exercise");
                if e.choice.is_empty() {
                    return Err(LedgerError::invalid(format!("{field}.choice"), "empty"));
                }
                let c = visible(&e.contract_id)?;
                if e.consuming {
                    by_signatory(c, act_as, &field)?;
                    actions.push(Action::Archive(Archive { contract_id: e.contract_id.clone() }));
                } else if !c.signatories.iter().chain(&c.observers).any(|p| act_as.contains(p)) {
                    return Err(LedgerError::NotAuthorized {
                        reason: format!("{field}: no acting party is a stakeholder of contract {}", e.contract_id),
                    });
                }
                touch(&c.signatories, &c.observers);
                for (j, c) in e.creates.iter().enumerate() {
                    let at = actions.len();
                    let create = create(&format!("{field}.creates[{j}]"), c, contract_id(request_uuid, i, at))?;
                    touch(&c.signatories, &c.observers);
                    actions.push(Action::Create(create));
                }
                if actions.is_empty() {
                    return Err(LedgerError::invalid(field, "a non-consuming exercise without creates does nothing"));
                }
            }
        }
        views.push(View { common: ViewCommonData { informees, confirming_parties: confirming }, actions });
    }
    Ok(views)
}

/// Archiving needs an acting signatory.
fn by_signatory(c: &StoredContract, act_as: &BTreeSet<String>, field: &str) -> Result<(), LedgerError> {
    if c.signatories.iter().any(|s| act_as.contains(s)) {
        return Ok(());
    }
    Err(LedgerError::NotAuthorized {
        reason: format!(
            "{field}: contract {} can only be archived by one of its signatories {:?}",
            c.contract_id, c.signatories
        ),
    })
}

/// A create action, its fields checked.
fn create(field: &str, c: &CreateCommand, contract_id: String) -> Result<Create, LedgerError> {
    if c.template.is_empty() {
        return Err(LedgerError::invalid(format!("{field}.template"), "empty"));
    }
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&c.arguments) {
        return Err(LedgerError::invalid(format!("{field}.arguments"), format!("not JSON: {e}")));
    }
    let (signatories, observers) = (set(&c.signatories), set(&c.observers));
    if signatories.is_empty() {
        return Err(LedgerError::invalid(format!("{field}.signatories"), "empty (at least one is required)"));
    }
    if let Some(p) = signatories.intersection(&observers).next() {
        return Err(LedgerError::invalid(format!("{field}.observers"), format!("{p} is also a signatory")));
    }
    Ok(Create { contract_id, template: c.template.clone(), arguments: c.arguments.clone(), signatories, observers })
}

/// Why the actions of `view` (view `index` of request `request_uuid`, acting as `act_as`) are
/// not well-formed, if they are not: created ids are the derived ones, every stakeholder is an
/// informee, every signatory confirms, and an archive has an acting signatory. `known` holds
/// the archived contracts this participant knows.
pub fn check_view(
    view: &View,
    index: usize,
    request_uuid: &str,
    act_as: &BTreeSet<String>,
    known: &BTreeMap<String, StoredContract>,
) -> Option<String> {
    let common = &view.common;
    for (j, action) in view.actions.iter().enumerate() {
        match action {
            Action::Create(c) => {
                if c.contract_id != contract_id(request_uuid, index, j) {
                    return Some(format!("action {j}: contract id {} is not the derived one", c.contract_id));
                }
                if let Some(p) = c.stakeholders().iter().find(|p| !common.informees.contains(*p)) {
                    return Some(format!("action {j}: stakeholder {p} is not an informee"));
                }
                if let Some(p) = c.signatories.iter().find(|p| !common.confirming_parties.contains(*p)) {
                    return Some(format!("action {j}: signatory {p} does not confirm"));
                }
            }
            Action::Archive(a) => {
                let Some(c) = known.get(&a.contract_id) else { continue };
                if let Some(p) = c.signatories.iter().find(|p| !common.confirming_parties.contains(*p)) {
                    return Some(format!("action {j}: signatory {p} of {} does not confirm", a.contract_id));
                }
                if let Some(p) = c.observers.iter().find(|p| !common.informees.contains(*p)) {
                    return Some(format!("action {j}: stakeholder {p} of {} is not an informee", a.contract_id));
                }
                if !c.signatories.iter().any(|s| act_as.contains(s)) {
                    return Some(format!("action {j}: no acting party is a signatory of {}", a.contract_id));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(xs: &[&str]) -> BTreeSet<String> {
        xs.iter().map(|x| x.to_string()).collect()
    }

    fn contract(id: &str, sigs: &[&str], obs: &[&str]) -> StoredContract {
        StoredContract {
            contract_id: id.into(),
            template: "Iou".into(),
            arguments: "{}".into(),
            signatories: sigs.iter().map(|x| x.to_string()).collect(),
            observers: obs.iter().map(|x| x.to_string()).collect(),
            created_offset: 1,
            created_update: "u".into(),
            archived_offset: None,
        }
    }

    fn iou(sigs: &[&str], obs: &[&str]) -> CreateCommand {
        CreateCommand {
            template: "Iou".into(),
            arguments: r#"{"amount":1}"#.into(),
            signatories: sigs.iter().map(|x| x.to_string()).collect(),
            observers: obs.iter().map(|x| x.to_string()).collect(),
        }
    }

    #[test]
    fn change_hash_depends_on_the_set_of_acting_parties_only() {
        let a = change_hash("app", "c1", &s(&["alice", "bob"]));
        assert_eq!(a, change_hash("app", "c1", &s(&["bob", "alice"])));
        assert_ne!(a, change_hash("app", "c1", &s(&["alice"])));
        assert_ne!(change_hash("ap", "pc1", &s(&["x"])), change_hash("app", "c1", &s(&["x"])), "length-prefixed");
    }

    #[test]
    fn views_carry_stakeholders_as_informees_and_signatories_as_confirmers() {
        let known = BTreeMap::from([("c1".to_string(), contract("c1", &["alice", "bank"], &["carol"]))]);
        let commands = vec![
            Command::Create(iou(&["alice", "bob"], &["carol"])),
            Command::Exercise(crate::model::ExerciseCommand {
                contract_id: "c1".into(),
                choice: "Transfer".into(),
                consuming: true,
                creates: vec![iou(&["bob"], &[])],
            }),
        ];
        let uuid = new_uuid();
        let v = views(&commands, &s(&["alice"]), &s(&[]), &uuid, &known).unwrap();
        assert_eq!(v[0].common.informees, s(&["alice", "bob", "carol"]));
        assert_eq!(v[0].common.confirming_parties, s(&["alice", "bob"]));
        assert_eq!(v[1].common.confirming_parties, s(&["alice", "bank", "bob"]));
        let Action::Create(created) = &v[1].actions[1] else { panic!() };
        assert_eq!(created.contract_id, contract_id(&uuid, 1, 1));
        for (i, view) in v.iter().enumerate() {
            assert_eq!(check_view(view, i, &uuid, &s(&["alice"]), &known), None);
        }
        assert!(check_view(&v[0], 0, &new_uuid(), &s(&["alice"]), &known).unwrap().contains("derived"));
    }

    #[test]
    fn archives_need_an_acting_signatory_and_a_visible_active_contract() {
        let mut archived = contract("c2", &["alice"], &[]);
        archived.archived_offset = Some(3);
        let known =
            BTreeMap::from([("c1".to_string(), contract("c1", &["alice"], &["bob"])), ("c2".to_string(), archived)]);
        let archive = |id: &str| vec![Command::Archive { contract_id: id.into() }];
        let e = views(&archive("c1"), &s(&["bob"]), &s(&[]), &new_uuid(), &known).unwrap_err();
        assert_eq!(e.error_id(), "DAML_AUTHORIZATION_ERROR", "{e}");
        let e = views(&archive("c2"), &s(&["alice"]), &s(&[]), &new_uuid(), &known).unwrap_err();
        assert_eq!(e.error_id(), "CONTRACT_NOT_FOUND");
        let e = views(&archive("c1"), &s(&["dave"]), &s(&[]), &new_uuid(), &known).unwrap_err();
        assert_eq!(e.error_id(), "CONTRACT_NOT_FOUND", "not visible to dave");
        let e =
            views(&[Command::Create(iou(&["bob"], &[]))], &s(&["alice"]), &s(&[]), &new_uuid(), &known).unwrap_err();
        assert_eq!(e.error_id(), "DAML_AUTHORIZATION_ERROR");
    }
}
