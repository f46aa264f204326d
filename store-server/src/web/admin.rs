//! The admin console: server health (uptime, connections, devices online, disk, packs
//! and garbage, deduplication, the last retention run and scrub), accounts (add, delete,
//! role, password reset, quota, retention, conflict policy, usage) and the audit log with
//! filters, on the running server. Each page and change is one `Request::Admin`, which the
//! one authorisation function refuses to anyone but an admin; this module only
//! translates.

use super::pages::{dates, human_size, render};
use super::{Peer, Web};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Json};
use serde::Deserialize;
use shelf_protocol::{
    AdminRequest, ErrorCode, JobRun, Request, Response as Answer, RetentionPolicy, Role,
    ServerHealth, WireError,
};
use std::sync::Arc;

/// Audit entries shown.
const AUDIT_LINES: u32 = 200;

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::User => "user",
        Role::Viewer => "viewer",
    }
}

fn role_of(s: &str) -> Result<Role, WireError> {
    match s {
        "admin" => Ok(Role::Admin),
        "user" => Ok(Role::User),
        "viewer" => Ok(Role::Viewer),
        _ => Err(ErrorCode::InvalidArgument.into()),
    }
}

struct UserRow {
    name: String,
    role: String,
    stored: String,
    quota: String,
    retention: String,
    policy: RetentionPolicy,
    last_writer_wins: bool,
}

/// One fact of the health table.
struct Fact {
    name: &'static str,
    value: String,
}

#[derive(Deserialize, Default)]
pub struct AuditFilter {
    #[serde(default)]
    user: String,
    #[serde(default)]
    kind: String,
}

fn job(run: Option<JobRun>) -> String {
    match run {
        None => "not yet".into(),
        Some(r) => format!(
            "{}, took {:.1} s: {}",
            dates(r.at.secs).0,
            r.millis as f64 / 1000.0,
            r.summary
        ),
    }
}

fn uptime(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match d {
        0 => format!("{h} h {m} min"),
        d => format!("{d} d {h} h"),
    }
}

fn facts(h: ServerHealth) -> Vec<Fact> {
    let ratio = match h.stored_bytes {
        0 => "—".to_string(),
        s => format!("{:.2}", h.logical_bytes as f64 / s as f64),
    };
    let fact = |name, value| Fact { name, value };
    vec![
        fact("Version", h.version),
        fact("Up for", uptime(h.uptime_secs)),
        fact("Connections open", h.connections.to_string()),
        fact("Devices online", h.devices_online.to_string()),
        fact(
            "Disk free",
            format!(
                "{} of {}",
                human_size(h.disk_free),
                human_size(h.disk_total)
            ),
        ),
        fact(
            "Pack files",
            format!(
                "{} file(s), {} ({} garbage, freed by the next compaction)",
                h.pack_files,
                human_size(h.pack_bytes),
                human_size(h.garbage_bytes)
            ),
        ),
        fact("Database", human_size(h.database_bytes)),
        fact(
            "Current files / stored",
            format!(
                "{} / {} (ratio {ratio}: above 1, deduplication saves space)",
                human_size(h.logical_bytes),
                human_size(h.stored_bytes)
            ),
        ),
        fact("Last retention run", job(h.last_prune)),
        fact("Last scrub", job(h.last_scrub)),
    ]
}

struct AuditRow {
    at: String,
    what: String,
    user: String,
    from: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    user: String,
    csrf: String,
    roles: Vec<String>,
    users: Vec<UserRow>,
    audit: Vec<AuditRow>,
    health: Vec<Fact>,
    filter_user: String,
    filter_kind: String,
}

pub async fn page(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Query(filter): Query<AuditFilter>,
) -> Response {
    let (user, kind) = (
        filter.user.trim().to_string(),
        filter.kind.trim().to_string(),
    );
    let (u, k) = (user.clone(), kind.clone());
    let got = super::page_data(&web, peer, &headers, move |w, s| {
        let users = match s.call(&w.store, Request::Admin(AdminRequest::ListUsers))? {
            Answer::Users(u) => u,
            _ => return Err(ErrorCode::Internal.into()),
        };
        let audit = match s.call(
            &w.store,
            Request::Admin(AdminRequest::Audit {
                limit: AUDIT_LINES,
                user: (!u.is_empty()).then_some(u),
                kind: (!k.is_empty()).then_some(k),
            }),
        )? {
            Answer::Audit(a) => a,
            _ => return Err(ErrorCode::Internal.into()),
        };
        let health = match s.call(&w.store, Request::Admin(AdminRequest::Health))? {
            Answer::Health(h) => h,
            _ => return Err(ErrorCode::Internal.into()),
        };
        Ok((users, audit, health))
    })
    .await;
    let (session, (users, audit, health)) = match got {
        Ok(x) => x,
        Err(r) => return r,
    };
    render(&AdminPage {
        user: session.user.clone(),
        csrf: web.sessions.csrf(&session),
        roles: vec!["admin".into(), "user".into(), "viewer".into()],
        users: users
            .into_iter()
            .map(|u| UserRow {
                role: role_name(u.role).to_string(),
                stored: human_size(u.stored_bytes),
                quota: u.quota.map(human_size).unwrap_or_else(|| "none".into()),
                retention: crate::store::retention::Retention::from(u.retention).to_string(),
                policy: u.retention,
                last_writer_wins: u.last_writer_wins,
                name: u.name,
            })
            .collect(),
        health: facts(health),
        filter_user: user,
        filter_kind: kind,
        audit: audit
            .into_iter()
            .rev()
            .map(|a| AuditRow {
                at: dates(a.at.secs).0,
                what: a.what,
                user: a.user,
                from: a.from,
                detail: a.detail,
            })
            .collect(),
    })
}

/// One change from the console.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Add {
        name: String,
        password: String,
        role: String,
    },
    Delete {
        name: String,
    },
    Role {
        name: String,
        role: String,
    },
    Password {
        name: String,
        password: String,
    },
    Quota {
        name: String,
        gib: Option<f64>,
    },
    Retention {
        name: String,
        keep_all: bool,
        all_days: u32,
        daily_days: u32,
        deleted_days: u32,
    },
    Conflicts {
        name: String,
        last_writer_wins: bool,
    },
}

fn request(op: Op) -> Result<AdminRequest, WireError> {
    Ok(match op {
        Op::Add {
            name,
            password,
            role,
        } => AdminRequest::AddUser {
            name,
            password,
            role: role_of(&role)?,
        },
        Op::Delete { name } => AdminRequest::DeleteUser { name },
        Op::Role { name, role } => AdminRequest::SetRole {
            name,
            role: role_of(&role)?,
        },
        Op::Password { name, password } => AdminRequest::SetPassword { name, password },
        Op::Quota { name, gib } => AdminRequest::SetQuota {
            name,
            bytes: match gib {
                None => None,
                Some(g) if g.is_finite() && g >= 0.0 => Some((g * (1u64 << 30) as f64) as u64),
                Some(_) => return Err(ErrorCode::InvalidArgument.into()),
            },
        },
        Op::Retention {
            name,
            keep_all,
            all_days,
            daily_days,
            deleted_days,
        } => AdminRequest::SetRetention {
            name,
            policy: RetentionPolicy {
                keep_all,
                all_days,
                daily_days,
                deleted_days,
            },
        },
        Op::Conflicts {
            name,
            last_writer_wins,
        } => AdminRequest::SetConflictPolicy {
            name,
            last_writer_wins,
        },
    })
}

/// `POST /api/admin`.
pub async fn change(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(op): Json<Op>,
) -> Response {
    super::api_change(web, peer, headers, move |web, session| {
        session.call(&web.store, Request::Admin(request(op)?))?;
        Ok(())
    })
    .await
}
